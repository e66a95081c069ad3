"""The routing rules file: parsed and checked once at start, so a bad file stops the backend.

Every problem is reported with the file's line, found from the TOML text itself because `tomllib`
keeps no positions: the line of the offending key inside its `[[rule]]` block.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from backend.journeys.merge import FINAL_STAGES, FORWARD_STAGES
from switchboard.commands import CommandName
from switchboard.events import EVENT_TYPES, JOURNEY_TYPES, RESERVED_SYSTEMS, whole

DEFAULT_RULES = Path(__file__).resolve().parent / "rules" / "v1.toml"

STAGES = frozenset(FORWARD_STAGES) | FINAL_STAGES
# journey attributes a condition may test; `eligibility` means its result
CONDITION_ATTRIBUTES = frozenset({"stage", "priority", "eligibility", "channel", "service", "site"})
# journey attributes a command may carry
INCLUDABLE = frozenset({"stage", "service", "slot_start", "channel", "priority", "eligibility", "counter",
                        "ticket",
                        "outcome", "last_interaction", "reminder_at"})

Name = Annotated[str, Meta(pattern=whole(r"[a-z][a-z0-9\-]{0,63}"))]
Values = Annotated[list[str], Meta(min_length=1)]


class Condition(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    event: str | None = None
    data: dict[str, str] = {}
    becomes: dict[str, Values] = {}
    state: dict[str, Values] = {}


class Rule(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name
    description: str
    when: Condition
    command: CommandName  # as the command message spells it (switchboard/commands.py)
    to: str
    include: list[str] = []


class RulesFile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    version: int
    rule: list[Rule]


class RulesFileError(Exception):
    """A rules file that cannot be used; the message names the file, the line and the problem."""


class RuleSet(msgspec.Struct, frozen=True):
    path: str
    version: int
    rules: tuple[Rule, ...]


class _Lines:
    """Maps a rule index and key to the line it is written on."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.headers = [i for i, line in enumerate(self.lines) if re.match(r"^\s*\[\[\s*rule\s*\]\]", line)]

    def of(self, rule: int | None, key: str | None) -> int:
        if rule is None or rule >= len(self.headers):
            start, end = 0, len(self.lines)
        else:
            start = self.headers[rule]
            end = self.headers[rule + 1] if rule + 1 < len(self.headers) else len(self.lines)
        if key:
            pattern = re.compile(rf"(^|[\s.{{,]){re.escape(key)}\s*[=.]")
            for i in range(start, end):
                if pattern.search(self.lines[i].split("#", 1)[0]):
                    return i + 1
        return start + 1


def _problem_location(message: str) -> tuple[int | None, str | None]:
    """Rule index and innermost key of a msgspec error such as "... - at `$.rule[2].when.data`"."""
    unknown = re.search(r"unknown field `([^`]+)`", message)
    at = re.search(r"at `\$\.?([^`]*)`", message)
    path = at.group(1) if at else ""
    index = re.match(r"rule\[(\d+)\]", path)
    keys = [k for k in re.split(r"[.\[\]]", path) if k and not k.isdigit()]
    key = unknown.group(1) if unknown else (keys[-1] if keys and keys[-1] != "rule" else None)
    return (int(index.group(1)) if index else None), key


def _check_rule(rule: Rule, systems: frozenset[str]) -> list[tuple[str, str]]:
    """(key, problem) pairs for one rule's meaning."""
    problems: list[tuple[str, str]] = []
    when = rule.when
    if (when.event is None) == (not when.becomes):
        problems.append(("when", "a rule needs exactly one trigger: `when.event` or `when.becomes`"))
    if when.event is not None and when.event not in JOURNEY_TYPES:
        problems.append(("event", f"{when.event!r} is not a journey event type"))
    if when.data:
        if when.event is None:
            problems.append(("data", "`when.data` needs `when.event`"))
        elif when.event in JOURNEY_TYPES:
            data_type = msgspec.structs.fields(EVENT_TYPES[when.event])[-1].type
            known = {f.name for f in msgspec.structs.fields(data_type)}
            problems += [("data", f"{when.event} has no data field {k!r}")
                         for k in when.data if k not in known]
    for section, conditions in (("becomes", when.becomes), ("state", when.state)):
        for attribute, values in conditions.items():
            if attribute not in CONDITION_ATTRIBUTES:
                choices = ", ".join(sorted(CONDITION_ATTRIBUTES))
                problems.append((section, f"unknown journey attribute {attribute!r} (one of {choices})"))
            elif attribute == "stage" and not set(values) <= STAGES:
                problems.append((section, f"unknown stage in {values!r}"))
    if rule.to not in systems or rule.to in RESERVED_SYSTEMS:
        problems.append(("to", f"{rule.to!r} is not a registered system that can receive commands"))
    problems += [("include", f"cannot include unknown attribute {a!r}")
                 for a in rule.include if a not in INCLUDABLE]
    return problems


def load_rules(path: Path | str, systems: frozenset[str]) -> RuleSet:
    """Parse and check a rules file; `systems` are the systems commands may go to."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise RulesFileError(f"{path}: cannot read the rules file: {exc.strerror}") from exc
    try:
        document: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"line (\d+)", str(exc))
        raise RulesFileError(f"{path} line {line.group(1) if line else '?'}: not valid TOML: {exc}") from exc
    lines = _Lines(text)
    try:
        parsed = msgspec.convert(document, RulesFile)
    except msgspec.ValidationError as exc:
        index, key = _problem_location(str(exc))
        raise RulesFileError(f"{path} line {lines.of(index, key)}: {exc}") from exc
    if parsed.version != 1:
        raise RulesFileError(f"{path} line {lines.of(None, 'version')}: version {parsed.version} is not"
                             " supported")
    seen: set[str] = set()
    for index, rule in enumerate(parsed.rule):
        problems = _check_rule(rule, systems)
        if rule.name in seen:
            problems.insert(0, ("name", f"rule name {rule.name!r} is used twice"))
        seen.add(rule.name)
        if problems:
            key, problem = problems[0]
            raise RulesFileError(f"{path} line {lines.of(index, key)}: rule {rule.name!r}: {problem}")
    return RuleSet(path=str(path), version=parsed.version, rules=tuple(parsed.rule))
