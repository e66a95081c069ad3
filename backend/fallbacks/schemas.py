from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from msgspec import Meta

from switchboard.commands import System
from switchboard.events import Code, Ref

FallbackStatus = Literal["active", "replaying", "ended"]
Action = Literal["check_in", "issue_ticket", "call", "start", "complete"]
Reason = Annotated[str, Meta(min_length=3, max_length=500)]


class StartFallback(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    site: Code
    system: System
    reason: Reason


class EndFallback(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: Reason | None = None


class ManualAction(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One step staff took by hand. `ref` names the journey (none for a walk-in's check-in: a reference is
    made); `counter` is needed for `call` and `start`, `outcome` for `complete`."""

    action: Action
    ref: Ref | None = None
    counter: Code | None = None
    outcome: Code | None = None
    queue_name: Code | None = None


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


class FallbackDetail(Fallback, kw_only=True):
    ledger: list[LedgerEntry]


class FallbackPage(msgspec.Struct):
    items: list[Fallback]
    next_cursor: str | None


class ActionResult(msgspec.Struct, kw_only=True):
    """What a manual step did: `applied` once its event is applied (the journey then shows it)."""

    fallback_id: int
    seq: int
    action: Action
    ref: str
    event_source: str
    event_id: str
    applied: bool
    journey_id: UUID | None
    stage: str | None
    ticket: str | None = None
    # the manual ticket's own reference (`manual:<site>.<day>.M-001`), to call it by
    ticket_ref: str | None = None
