"""Alert rules, from a TOML file (`SWITCHBOARD_ALERT_RULES_FILE`) or the defaults below.

    [[rules]]
    name = "system-down"
    kind = "system_down"       # a system's integration health `down` for longer than for_minutes
    for_minutes = 5

    [[rules]]
    name = "wait-over-target"
    kind = "wait_over_target"  # someone at a site has waited past their service's target for for_minutes
    for_minutes = 10

    [[rules]]
    name = "failures-piling-up"
    kind = "failure_rate"      # new failures per minute at a site, over window_minutes, above per_minute
    per_minute = 5
    window_minutes = 5
    for_minutes = 0

    [[rules]]
    name = "drift-open"
    kind = "drift_open"        # a site's oldest open drift item older than for_minutes
    for_minutes = 60

A rule's name identifies its alerts: renaming a rule resolves the alerts of the old name.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta

from switchboard.events import whole

Minutes = Annotated[float, Meta(ge=0, le=7 * 24 * 60)]
Name = Annotated[str, Meta(min_length=1, max_length=64, pattern=whole(r"[a-z0-9][a-z0-9_.-]*"))]


class _Rule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="kind"):
    name: Name
    for_minutes: Minutes = 0


class SystemDown(_Rule, frozen=True, tag="system_down"):
    for_minutes: Minutes = 5


class WaitOverTarget(_Rule, frozen=True, tag="wait_over_target"):
    for_minutes: Minutes = 10


class FailureRate(_Rule, frozen=True, tag="failure_rate"):
    per_minute: Annotated[float, Meta(ge=0)] = 5
    window_minutes: Annotated[float, Meta(gt=0, le=24 * 60)] = 5


class DriftOpen(_Rule, frozen=True, tag="drift_open"):
    for_minutes: Minutes = 60


Rule = SystemDown | WaitOverTarget | FailureRate | DriftOpen

DEFAULT_RULES: tuple[Rule, ...] = (SystemDown(name="system-down"), WaitOverTarget(name="wait-over-target"),
                                   FailureRate(name="failures-piling-up"), DriftOpen(name="drift-open"))


class _File(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    rules: list[Rule] = []


class AlertRulesError(ValueError):
    """The rules file cannot be used; the message says why."""


def parse_rules(text: str) -> tuple[Rule, ...]:
    try:
        rules = msgspec.convert(tomllib.loads(text), _File).rules
    except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise AlertRulesError(f"alert rules file: {exc}") from exc
    names = [rule.name for rule in rules]
    if len(set(names)) != len(names):
        raise AlertRulesError("alert rules file: two rules share a name")
    return tuple(rules)


def load_alert_rules(path: str) -> tuple[Rule, ...]:
    return parse_rules(Path(path).read_text(encoding="utf-8")) if path else DEFAULT_RULES
