"""The API shapes of reconciliation (CONTRACT sections 5 and 7)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import msgspec
from msgspec import Meta

from switchboard.commands import System
from switchboard.events import Code

DriftKind = Literal["missing_here", "missing_there", "state_mismatch", "stale"]
DriftStatus = Literal["open", "repairing", "resolved", "ignored"]
Action = Literal["accept_source", "push_ours", "ignore"]
Trigger = Literal["schedule", "on_demand", "fallback_end"]
Reason = Annotated[str, Meta(min_length=3, max_length=500)]


class Run(msgspec.Struct, kw_only=True):
    id: int
    system: str
    site: str
    day: date
    trigger: str
    requested_by: str | None
    status: Literal["running", "done", "unreachable", "error"]
    started_at: datetime
    finished_at: datetime | None
    duration_s: float | None
    checked: int
    drifted: int
    error: str | None


class SystemStatus(msgspec.Struct, kw_only=True):
    """One system at one site: its last run and the drift still open."""

    system: str
    site: str
    reachable: bool
    last_run: Run
    open_drift: int


class StatusPage(msgspec.Struct):
    items: list[SystemStatus]
    next_cursor: str | None = None


class DriftItem(msgspec.Struct, kw_only=True):
    id: int
    run_id: int
    system: str
    site: str
    ref: str
    journey_id: UUID | None
    kind: str
    field: str | None
    ours: Any
    theirs: Any
    theirs_updated_at: datetime | None
    fallback_id: int | None
    conflict: bool
    status: str
    # what a resolve does when no action is named: the direction the ownership map gives
    proposed_action: Action
    action: str | None
    reason: str | None
    acted_by: str | None
    command_id: UUID | None
    last_check: Any
    detected_at: datetime
    updated_at: datetime
    resolved_at: datetime | None


class DriftPage(msgspec.Struct):
    items: list[DriftItem]
    next_cursor: str | None


class RunRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    system: System
    site: Code
    day: date | None = None  # today (UTC) when omitted
    reason: Annotated[str, Meta(max_length=500)] | None = None


class RunStarted(msgspec.Struct, kw_only=True):
    run: Run
    # false: a run of this system and site was already in progress; `run` is that one
    started: bool


class RepairPlan(msgspec.Struct, kw_only=True):
    """What resolving one item would change, said before anything changes."""

    drift_id: int
    ref: str
    kind: str
    field: str | None
    action: Action
    # where the change happens: `switchboard` (accept_source) or the system (push_ours); none for ignore
    changes: str | None
    from_: Any = msgspec.field(name="from")
    to: Any
    possible: bool
    note: str | None = None


class ResolveRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    action: Action
    reason: Reason | None = None  # required for ignore
    dry_run: bool = False


class ResolveResult(msgspec.Struct, kw_only=True):
    drift_id: int
    outcome: Literal["preview", "repairing", "ignored"]
    status: str
    plan: RepairPlan
    command_id: UUID | None = None
    events: list[str] = []  # ids of the corrective events from /switchboard


class DriftFilter(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Which open drift items a bulk resolve covers."""

    system: System | None = None
    site: Code | None = None
    kind: DriftKind | None = None


class BulkPreviewRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    filter: DriftFilter = msgspec.field(default_factory=DriftFilter)
    # one action for every item; none: each item's proposed action
    action: Action | None = None


class BulkPreview(msgspec.Struct, kw_only=True):
    matched: int
    # how many the resolve would act on: the possible ones
    acting: int
    selection: str
    plans: list[RepairPlan]


class BulkResolveRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    selection: str  # from the preview: the resolve acts on exactly the items it showed as possible
    reason: Reason | None = None


class BulkResolveResult(msgspec.Struct, kw_only=True):
    acted: int
    selection: str
    results: list[ResolveResult]


class LiveEntry(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One entry of the live `reconciliation` topic: a system's status at a site, or one drift item."""

    key: str  # `status:<system>:<site>` or `drift:<id>`
    status: SystemStatus | None = None
    drift: DriftItem | None = None
