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
    AppointmentBooked, AppointmentCancelled, AppointmentNoShow, AppointmentRescheduled, CloudEvent,
    CustomerArrived, EligibilityChecked, InteractionLogged, PriorityChanged, ReminderSent, ServiceCompleted,
    ServiceStarted, TicketCalled, TicketIssued,
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
    merged = JourneyState(**{name: _latest(getattr(a, name), getattr(b, name)) for name in _LATEST_FIELDS})
    merged.stage = _latest(a.stage, b.stage)
    reached = dict(a.reached)
    for stage, at in b.reached.items():
        if stage not in reached or at < reached[stage]:
            reached[stage] = at
    merged.reached = reached
    return merged


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def state_of(event: CloudEvent) -> JourneyState:
    """The state a single journey event describes; a journey is the merge of these."""
    key = event.key
    at = _iso(event.time)
    state = JourneyState(site=Stamped(key, event.data.site))  # type: ignore[attr-defined]

    def reach(stage: str) -> None:
        state.stage = Stamped(_stage_key(stage, key), stage)
        if stage in _TIMED_STAGES or stage in FINAL_STAGES:
            state.reached = {stage: at}

    match event:
        case AppointmentBooked(data=d):
            reach("booked")
            state.service = Stamped(key, d.service)
            state.channel = Stamped(key, d.channel)
            state.slot_start = Stamped(key, _iso(d.slot_start))
        case AppointmentRescheduled(data=d):
            state.slot_start = Stamped(key, _iso(d.slot_start))
        case AppointmentCancelled(data=d):
            reach("cancelled")
            state.outcome = Stamped(key, d.reason_code)
        case AppointmentNoShow():
            reach("no_show")
        case ReminderSent():
            state.reminder_at = Stamped(key, at)
        case EligibilityChecked(data=d):
            state.eligibility = Stamped(key, {"result": d.result, "reason_code": d.reason_code})
        case PriorityChanged(data=d):
            state.priority = Stamped(key, d.priority)
        case InteractionLogged(data=d):
            state.last_interaction = Stamped(
                key, {"channel": d.channel, "reason_code": d.reason_code, "outcome": d.outcome, "time": at})
        case CustomerArrived():
            reach("arrived")
        case TicketIssued(data=d):
            reach("waiting")
            state.ticket = Stamped(key, {"ticket": d.ticket, "queue_name": d.queue_name})
        case TicketCalled(data=d):
            reach("called")
            state.counter = Stamped(key, d.counter)
        case ServiceStarted(data=d):
            reach("in_service")
            state.counter = Stamped(key, d.counter)
        case ServiceCompleted(data=d):
            reach("completed")
            state.outcome = Stamped(key, d.outcome)
        case _:
            raise ValueError(f"{event.type} is not a journey event")
    return state


def fold(state: JourneyState, event: CloudEvent) -> JourneyState:
    return merge(state, state_of(event))
