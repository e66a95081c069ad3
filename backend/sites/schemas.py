"""The API shapes of floor operations (CONTRACT section 10): sites, the floor of one, actions on a
customer."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal
from uuid import UUID

import msgspec

from backend.commands.schemas import CommandState
from backend.fallbacks.schemas import ActionResult, Fallback, StepId
from switchboard.events import Code

FloorActionName = Literal["call", "recall", "no_show", "transfer", "start", "complete"]
# a command's delivery state (normal operation), or a manual step's (during the queue's fallback)
ActionStatus = Literal["pending", "held", "sent", "ok", "failed", "recorded", "applied", "refused"]


class Site(msgspec.Struct, kw_only=True):
    site: str
    time_zone: str
    wait_target_s: float
    service_targets_s: dict[str, float]
    counters: list[str]


class SitePage(msgspec.Struct):
    items: list[Site]


class FloorCustomer(msgspec.Struct, kw_only=True):
    """A customer at the site now; `position` is their turn among those waiting (None at a counter)."""

    journey_id: UUID
    refs: list[str]
    stage: Literal["arrived", "waiting", "called", "in_service"]
    position: int | None
    ticket: str | None
    queue_name: str | None
    service: str | None
    counter: str | None
    priority: Literal["normal", "high"]
    eligibility: Literal["passed", "failed", "unverified"] | None
    slot_start: datetime | None
    arrived_at: datetime | None
    called_at: datetime | None
    # waited so far, or until called; and the wait this customer's service should stay under (the site's
    # per-service target for `service`, else for `queue_name`, else the site's)
    wait_s: float
    wait_target_s: float


class CounterState(msgspec.Struct, kw_only=True):
    """A counter of the site and who is at it (`called` or `in_service`), if anyone."""

    counter: str
    journey_id: UUID | None
    ticket: str | None
    stage: Literal["called", "in_service"] | None


class Floor(msgspec.Struct, kw_only=True):
    site: Site
    at: datetime
    # at the counters first, then those waiting in the order the queue serves them: priority, appointment
    # time, arrival
    customers: list[FloorCustomer]
    counters: list[CounterState]
    # fallbacks active at the site: actions on the queue become manual steps while one runs for it
    fallbacks: list[Fallback]


class Booking(msgspec.Struct, kw_only=True):
    """An appointment booked at the site today (the site's own day) and not yet checked in."""

    journey_id: UUID
    ref: str  # the appointment's reference (`appointments:…`): what a check-in during its fallback names
    service: str | None
    slot_start: datetime


class BookingPage(msgspec.Struct, kw_only=True):
    site: str
    day: date
    items: list[Booking]


class FloorAction(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An action on a customer. `counter` for `call` (and `recall`/`start`, which default to the customer's
    counter), `queue_name` for `transfer`, `outcome` for `complete` (default `SERVED`), `reason` a code
    (never free text: it travels to the queue system). `step_id`, chosen by the caller, makes a repeat do
    nothing twice."""

    action: FloorActionName
    step_id: StepId
    counter: Code | None = None
    queue_name: Code | None = None
    outcome: Code | None = None
    reason: Code | None = None


class FloorActionAnswer(msgspec.Struct, kw_only=True):
    """`via: command`: sent to the queue system (`command` and its delivery state); `via: manual`: recorded
    as a manual step of the queue's fallback (`step`: recorded, applied or refused). `repeated`: the answer
    to an earlier request with this `step_id`, nothing done again."""

    step_id: str
    journey_id: UUID
    action: FloorActionName
    via: Literal["command", "manual"]
    status: ActionStatus
    repeated: bool
    command: CommandState | None = None
    step: ActionResult | None = None
