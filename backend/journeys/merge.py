"""Journey state as a merge of its events (CONTRACT section 2).

Every attribute carries the key (`time|source|id`) of the event that set it, and two states merge
attribute by attribute: the stage by rank, stage times by earliest, everything else by latest key.
The merge is commutative, associative and idempotent, so the same set of events gives the same
journey whatever the order in which they arrive, however often each arrives, and however the
journeys that a link joins were split before.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from switchboard.events import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentNoShow,
    AppointmentRescheduled,
    CloudEvent,
    CustomerArrived,
    EligibilityChecked,
    InteractionLogged,
    PriorityChanged,
    ReminderSent,
    ServiceCompleted,
    ServiceStarted,
    TicketCalled,
    TicketIssued,
)

FORWARD_STAGES = ("booked", "arrived", "waiting", "called", "in_service", "completed")
FINAL_STAGES = frozenset({"completed", "cancelled", "no_show"})
_STAGE_RANK = {stage: rank for rank, stage in enumerate(FORWARD_STAGES)}
_TIMED_STAGES = ("arrived", "waiting", "called", "in_service")


class Stamped(msgspec.Struct, frozen=True, array_like=True):
    """A value with the key of the event that set it."""

    key: str
    value: Any


class JourneyState(msgspec.Struct, kw_only=True, omit_defaults=True):
    site: Stamped | None = None
    stage: Stamped | None = None
    service: Stamped | None = None
    channel: Stamped | None = None
    slot_start: Stamped | None = None
    priority: Stamped | None = None
    eligibility: Stamped | None = None
    last_interaction: Stamped | None = None
    counter: Stamped | None = None
    ticket: Stamped | None = None
    reminder_at: Stamped | None = None
    outcome: Stamped | None = None
    # earliest time each stage was reached (ISO strings), for wait and service times
    reached: dict[str, str] = {}

    def value(self, name: str) -> Any:
        stamped = getattr(self, name)
        return None if stamped is None else stamped.value


_LATEST_FIELDS = tuple(f for f in JourneyState.__struct_fields__ if f not in ("stage", "reached"))


def _stage_key(stage: str, event_key: str) -> str:
    # A final stage outranks every forward one; between finals the latest event wins.
    return f"9|{event_key}" if stage in FINAL_STAGES else f"{_STAGE_RANK[stage]}|"


def _latest(a: Stamped | None, b: Stamped | None) -> Stamped | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if a.key >= b.key else b


def merge(a: JourneyState, b: JourneyState) -> JourneyState:
    # the keys are the Stamped fields only, which a type checker cannot tell from a dict
    merged = JourneyState(**{name: _latest(getattr(a, name), getattr(b, name))  # type: ignore[arg-type]
                             for name in _LATEST_FIELDS})
    merged.stage = _latest(a.stage, b.stage)
    reached = dict(a.reached)
    for stage, at in b.reached.items():
        if stage not in reached or at < reached[stage]:
            reached[stage] = at
    merged.reached = reached
    return merged


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def contributions(event: CloudEvent) -> tuple[list[tuple[str, Stamped]], dict[str, str]]:
    """What a single journey event says: stamped attribute values, and the stage times it reaches."""
    key = event.key
    at = _iso(event.time)
    values: list[tuple[str, Stamped]] = [("site", Stamped(key, event.data.site))]
    reached: dict[str, str] = {}

    def reach(stage: str) -> None:
        values.append(("stage", Stamped(_stage_key(stage, key), stage)))
        if stage in _TIMED_STAGES or stage in FINAL_STAGES:
            reached[stage] = at

    match event:
        case AppointmentBooked(data=d):
            reach("booked")
            values += [("service", Stamped(key, d.service)), ("channel", Stamped(key, d.channel)),
                       ("slot_start", Stamped(key, _iso(d.slot_start)))]
        case AppointmentRescheduled(data=d):
            values.append(("slot_start", Stamped(key, _iso(d.slot_start))))
        case AppointmentCancelled(data=d):
            reach("cancelled")
            values.append(("outcome", Stamped(key, d.reason_code)))
        case AppointmentNoShow():
            reach("no_show")
        case ReminderSent():
            values.append(("reminder_at", Stamped(key, at)))
        case EligibilityChecked(data=d):
            values.append(("eligibility", Stamped(key, {"result": d.result, "reason_code": d.reason_code})))
        case PriorityChanged(data=d):
            values.append(("priority", Stamped(key, d.priority)))
        case InteractionLogged(data=d):
            values.append(("last_interaction", Stamped(
                key, {"channel": d.channel, "reason_code": d.reason_code, "outcome": d.outcome, "time": at})))
        case CustomerArrived():
            reach("arrived")
        case TicketIssued(data=d):
            reach("waiting")
            values.append(("ticket", Stamped(key, {"ticket": d.ticket, "queue_name": d.queue_name})))
        case TicketCalled(data=d):
            reach("called")
            values.append(("counter", Stamped(key, d.counter)))
        case ServiceStarted(data=d):
            reach("in_service")
            values.append(("counter", Stamped(key, d.counter)))
        case ServiceCompleted(data=d):
            reach("completed")
            values.append(("outcome", Stamped(key, d.outcome)))
        case _:
            raise ValueError(f"{event.type} is not a journey event")
    return values, reached


def copy(state: JourneyState) -> JourneyState:
    """A state `fold` may change without touching the original (stamped values are immutable)."""
    return msgspec.structs.replace(state, reached=dict(state.reached))


def fold(state: JourneyState, event: CloudEvent) -> JourneyState:
    """`merge(state, <the event's state>)`, computed in place: the per-event hot path."""
    values, reached = contributions(event)
    for name, stamped in values:
        current = getattr(state, name)
        if current is None or stamped.key > current.key:
            setattr(state, name, stamped)
    for stage, at in reached.items():
        if stage not in state.reached or at < state.reached[stage]:
            state.reached[stage] = at
    return state
