"""Which commands a batch of applied events calls for, by the rules in force.

Pure and in memory: it sees each touched journey's state before and after the batch and the
batch's new events of that journey, and returns the commands to write to the outbox.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec

from backend.journeys.merge import JourneyState
from backend.routing.rules import DEFAULT_RULES, Rule, RuleSet, load_rules
from switchboard.events import CloudEvent, RESERVED_SYSTEMS, SEED_SYSTEMS

_active: RuleSet | None = None


def activate(rules: RuleSet) -> None:
    """Put a checked rule set in force for this process (at start)."""
    global _active  # noqa: PLW0603 - one rule set per process, chosen at start
    _active = rules


def active() -> RuleSet:
    """The rules in force; the packaged v1 rules when the process activated none (tools, benchmarks)."""
    if _active is None:
        activate(load_rules(DEFAULT_RULES, SEED_SYSTEMS | RESERVED_SYSTEMS))
    return _active  # type: ignore[return-value]


class JourneyChange(msgspec.Struct, kw_only=True):
    journey_id: UUID
    before: JourneyState
    after: JourneyState
    events: list[CloudEvent]


class PlannedCommand(msgspec.Struct, kw_only=True):
    dedupe_key: str
    rule: str
    system: str
    command: str
    journey_id: UUID
    site: str
    data: dict[str, Any]


def attribute(state: JourneyState, name: str) -> Any:
    value = state.value(name)
    return value.get("result") if name == "eligibility" and isinstance(value, dict) else value


def _state_holds(rule: Rule, state: JourneyState) -> bool:
    return all(attribute(state, a) in values for a, values in rule.when.state.items())


def _causes(rule: Rule, change: JourneyChange) -> list[CloudEvent]:
    """The events that make `rule` fire for this journey: one command per cause."""
    when = rule.when
    if not _state_holds(rule, change.after):
        return []
    if when.event is not None:
        return [e for e in change.events if e.type == when.event
                and all(getattr(e.data, k, None) == v for k, v in when.data.items())]
    moved = all(attribute(change.before, a) not in values and attribute(change.after, a) in values
                for a, values in when.becomes.items())
    return [max(change.events, key=lambda e: e.key)] if moved and change.events else []


def _data(rule: Rule, state: JourneyState) -> dict[str, Any]:
    return {"rule": rule.name, **{name: state.value(name) for name in rule.include}}


def plan(rules: RuleSet, changes: list[JourneyChange]) -> list[PlannedCommand]:
    planned: list[PlannedCommand] = []
    for change in changes:
        for rule in rules.rules:
            for cause in _causes(rule, change):
                planned.append(PlannedCommand(
                    dedupe_key=f"{rule.name}|{change.journey_id}|{cause.source} {cause.id}", rule=rule.name,
                    system=rule.to, command=rule.command, journey_id=change.journey_id,
                    site=change.after.value("site"), data=_data(rule, change.after),
                ))
    return planned
