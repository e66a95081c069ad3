"""Which commands a batch of applied events calls for, by the rules it is given.

Pure and in memory: it sees each touched journey's state before and after the batch and the
batch's new events of that journey, and returns the commands to write to the outbox.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID, uuid5

import msgspec

from backend.journeys.merge import JourneyState
from backend.routing.rules import Rule, RuleSet
from switchboard.events import CloudEvent


class JourneyChange(msgspec.Struct, kw_only=True):
    journey_id: UUID
    before: JourneyState
    after: JourneyState
    events: list[CloudEvent]


class PlannedCommand(msgspec.Struct, kw_only=True):
    id: UUID
    rule: str
    system: str
    command: str
    journey_id: UUID
    site: str
    data: dict[str, Any]


def attribute(state: JourneyState, name: str) -> Any:
    value = state.value(name)
    return value.get("result") if name == "eligibility" and isinstance(value, dict) else value


# Plain loops, the cheap test first: these run for every journey of every batch.
def _state_holds(rule: Rule, state: JourneyState) -> bool:
    for name, values in rule.when.state.items():  # noqa: SIM110 - a plain loop is cheaper than all()
        if attribute(state, name) not in values:
            return False
    return True


def _moved(rule: Rule, change: JourneyChange) -> bool:
    for name, values in rule.when.becomes.items():
        if attribute(change.after, name) not in values or attribute(change.before, name) in values:
            return False
    return True


def _data(rule: Rule, state: JourneyState) -> dict[str, Any]:
    return {"rule": rule.name, **{name: state.value(name) for name in rule.include}}


# The command id is derived from its cause, so writing the same command twice is a no-op.
_COMMAND_NAMESPACE = UUID("6f1d3c2e-5b7a-4e0f-9c8d-2a4b6e8f0a1c")


def command_id(rule: Rule, journey_id: UUID, cause: CloudEvent) -> UUID:
    return uuid5(_COMMAND_NAMESPACE, f"{rule.name}|{journey_id}|{cause.source} {cause.id}")


def plan(rules: RuleSet, changes: list[JourneyChange]) -> list[PlannedCommand]:
    """One command per (rule, journey, cause): the matching event, or the journey's latest event for
    `becomes`."""
    on_event: dict[str, list[Rule]] = {}
    on_change: list[Rule] = []
    for rule in rules.rules:
        if rule.when.event is not None:
            on_event.setdefault(rule.when.event, []).append(rule)
        else:
            on_change.append(rule)
    planned: list[PlannedCommand] = []

    def add(rule: Rule, change: JourneyChange, cause: CloudEvent) -> None:
        planned.append(PlannedCommand(
            id=command_id(rule, change.journey_id, cause), rule=rule.name, system=rule.to,
            command=rule.command,
            journey_id=change.journey_id, site=change.after.value("site"), data=_data(rule, change.after)))

    for change in changes:
        for event in change.events:
            for rule in on_event.get(event.type, ()):
                if all(getattr(event.data, k, None) == v for k, v in rule.when.data.items()) \
                        and _state_holds(rule, change.after):
                    add(rule, change, event)
        latest: CloudEvent | None = None
        for rule in on_change:
            if change.events and _moved(rule, change) and _state_holds(rule, change.after):
                latest = latest or max(change.events, key=lambda e: e.key)
                add(rule, change, latest)
    return planned
