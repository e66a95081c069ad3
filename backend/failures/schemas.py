from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from msgspec import Meta

FailureKind = Literal["invalid_event", "pii_rejected", "source_mismatch", "unauthorized_source",
                      "apply_error", "command_failed", "command_timeout"]


class FailureImpact(msgspec.Struct, kw_only=True):
    """The journey a failure holds up: customers waiting now and appointments coming up rank first."""

    journey_id: UUID
    stage: str
    waiting_since: datetime | None
    slot_start: datetime | None


class Failure(msgspec.Struct, kw_only=True):
    id: int
    kind: str
    status: str
    system: str | None
    site: str | None
    event_source: str | None
    event_id: str | None
    event_type: str | None
    command_id: str | None
    journey_id: UUID | None
    reason: str
    attempts: int
    first_at: datetime
    last_at: datetime
    acted_by: str | None
    payload: Any
    impact: FailureImpact | None = None
    # the sites its sender was limited to (a site's subject, an HTTP token with sites): a retry applies the
    # event for those sites alone; None for a sender of every site and for command failures
    sender_sites: list[str] | None = None


class FailurePage(msgspec.Struct):
    items: list[Failure]
    next_cursor: str | None


Outcome = Literal["resolved", "still_failing", "retrying", "already_resolved", "already_retrying",
                  "just_retried", "discarded", "already_discarded", "refused"]


class RetryRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: Annotated[str, Meta(max_length=500)] | None = None


class RetryResult(msgspec.Struct, kw_only=True):
    """What a retry did, truthfully: `resolved` only when the event was applied or the command answered ok."""

    failure_id: int
    outcome: Outcome
    status: str
    attempts: int
    reason: str
    note: str | None = None


class DiscardRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: Annotated[str, Meta(min_length=3, max_length=500)]


class BulkFilter(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Which open failures a bulk retry covers."""

    kind: FailureKind | None = None
    system: str | None = None
    site: str | None = None


class BulkRetryRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Preview with `dry_run` (the default) to learn how many match and get a `selection`; then send that
    `selection` with `dry_run: false` to retry exactly that set."""

    filter: BulkFilter = msgspec.field(default_factory=BulkFilter)
    dry_run: bool = True
    selection: str | None = None
    reason: Annotated[str, Meta(max_length=500)] | None = None


class BulkRetryResult(msgspec.Struct, kw_only=True):
    """`matched` counts every open failure the filter matches; `skipped` those of them never retried (refused
    for who sent them); `selected` those the selection holds (the oldest others, at most 500)."""

    matched: int
    selected: int
    selection: str
    dry_run: bool
    results: list[RetryResult] = []
    skipped: int = 0
    note: str | None = None
