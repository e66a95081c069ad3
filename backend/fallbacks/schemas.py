from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from msgspec import Meta

from switchboard.commands import System
from switchboard.events import Code, Priority, Ref, whole

FallbackStatus = Literal["active", "replaying", "ended"]
Action = Literal["check_in", "issue_ticket", "call", "recall", "no_show", "transfer", "start", "complete",
                 "book_walk_in", "mark_unverified", "verify", "set_priority"]
Reason = Annotated[str, Meta(min_length=3, max_length=500)]
# chosen by the caller (a UUID, say): a step repeated with the same id is done once
StepId = Annotated[str, Meta(pattern=whole(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}"))]
# the manual steps of each system's fallback (CONTRACT section 10); a system not named here has none
STEPS: dict[str, tuple[Action, ...]] = {
    "queue": ("check_in", "issue_ticket", "call", "recall", "no_show", "transfer", "start", "complete"),
    "appointments": ("check_in", "book_walk_in"),
    "core": ("mark_unverified", "verify"),
    "crm": ("set_priority",),
}
StepStatus = Literal["recorded", "applied", "refused"]


class StartFallback(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    site: Code
    system: System
    reason: Reason


class EndFallback(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: Reason | None = None


class ManualAction(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One step staff took by hand, among the steps of the fallback's system (`STEPS`). `ref` names the
    journey (none for a walk-in's check-in at the queue or `book_walk_in`: a reference is made); `counter`
    is needed for `call`, `recall` and `start`, `outcome` for `complete`, `queue_name` for `transfer`,
    `service` for `book_walk_in`, `result` for `verify`, `priority` for `set_priority`. With a `step_id`, a
    repeat answers with the first step as it stands now and records nothing."""

    action: Action
    ref: Ref | None = None
    counter: Code | None = None
    outcome: Code | None = None
    queue_name: Code | None = None
    service: Code | None = None
    result: Literal["passed", "failed"] | None = None
    priority: Priority | None = None
    reason_code: Code | None = None
    step_id: StepId | None = None


class ReplaySummary(msgspec.Struct, kw_only=True):
    """What the replay of a fallback's ledger did (backend/reconciliation/replay.py)."""

    pushed: int  # records sent to the system with record.push
    in_system: int  # records the system already held as we do
    conflicts: list[str]  # references the system changed meanwhile: drift items for review
    runs: list[int]  # the reconciliation runs made for it


class Fallback(msgspec.Struct, kw_only=True):
    id: int
    site: str
    system: str
    reason: str
    status: FallbackStatus
    started_by: str
    started_at: datetime
    ended_by: str | None
    ended_at: datetime | None
    end_reason: str | None
    # what the replay did once it finished; while replaying, what it has done so far
    replay: ReplaySummary | None
    ledger_size: int
    # the manual steps staff may take in this fallback: its system's
    steps: list[Action] = []


class LedgerEntry(msgspec.Struct, kw_only=True):
    seq: int
    action: Action
    ref: str
    journey_id: UUID | None
    event_source: str
    event_id: str
    actor: str
    data: dict[str, Any]
    at: datetime
    replay_status: str
    command_id: UUID | None
    step_id: str | None = None


class FallbackDetail(Fallback, kw_only=True):
    ledger: list[LedgerEntry]


class LedgerPage(msgspec.Struct):
    items: list[LedgerEntry]
    more: bool


class FallbackPage(msgspec.Struct):
    items: list[Fallback]
    next_cursor: str | None


class ActionResult(msgspec.Struct, kw_only=True):
    """What a manual step did, as it stands: `recorded` (in the ledger, its event on its way), `applied`
    (the journey shows it) or `refused` (its event became the failure `failure_id`)."""

    fallback_id: int
    seq: int
    action: Action
    ref: str
    event_source: str
    event_id: str
    status: StepStatus
    applied: bool
    journey_id: UUID | None
    stage: str | None
    ticket: str | None = None
    # the manual ticket's own reference (`manual:<site>.<day>.M-001`), to call it by
    ticket_ref: str | None = None
    step_id: str | None = None
    failure_id: int | None = None
    # true when this answers a repeated `step_id`: nothing new was recorded
    repeated: bool = False
