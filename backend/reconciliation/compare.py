"""Comparing a system's records with the journeys that hold their references: the drift they show."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec

from backend.journeys.merge import FINAL_STAGES, JourneyState
from backend.reconciliation.ownership import STAGE, as_fields, ours, owned, same, theirs
from backend.reconciliation.schemas import DriftKind
from switchboard.snapshots import SnapshotRecord


class Holding(msgspec.Struct, kw_only=True):
    """A journey as the reconciler sees it, through one of its references."""

    id: UUID
    site: str
    stage: str
    state: JourneyState
    updated_at: datetime
    refs: list[str]


class Finding(msgspec.Struct, kw_only=True):
    kind: DriftKind
    ref: str
    field: str | None = None
    ours: Any = None
    theirs: Any = None
    theirs_updated_at: datetime | None = None
    journey_id: UUID | None = None
    record: SnapshotRecord | None = None

    def dedupe_key(self, system: str) -> str:
        return f"{system}|{self.ref}|{self.kind}|{self.field or ''}"


# who set a field of a journey: the subject of that event, when the journey holds several of the system's refs
SetBy = Callable[[UUID, str], str | None]


def _stuck(system: str, journey: Holding, now: datetime, stale_after: timedelta) -> bool:
    stage = journey.stage
    if stage in FINAL_STAGES or stage not in owned(system).stages:
        return False
    since = journey.updated_at
    if stage == "booked" and (slot := journey.state.value("slot_start")):
        since = max(since, datetime.fromisoformat(slot))  # a booking is stuck only once its slot is long past
    return since + stale_after < now


def compare_record(system: str, record: SnapshotRecord, journey: Holding | None, *, now: datetime,
                   stale_after: timedelta, set_by: SetBy) -> list[Finding]:
    """The drift between one record and the journey holding its reference (None: Switchboard has none)."""
    if journey is None:
        whole = {"stage": record.stage, **record.fields} if record.stage else dict(record.fields)
        return [Finding(kind="missing_here", ref=record.ref, theirs=whole,
                        theirs_updated_at=record.updated_at, record=record)]
    found: list[Finding] = []
    same_system = [r for r in journey.refs if r != record.ref and r.startswith(f"{system}:")]
    for field in owned(system).compared:
        their_value = theirs(record, field)
        if their_value is None:
            continue  # the record does not state it: nothing to compare
        if same_system and field != STAGE and set_by(journey.id, field) in same_system:
            continue  # the journey's value comes from another of this system's records
        our_value = ours(system, journey.state, field)
        if field == STAGE and _stuck(system, journey, now, stale_after):
            found.append(Finding(kind="stale", ref=record.ref, field=STAGE, ours=journey.stage,
                                 theirs=their_value,
                                 theirs_updated_at=record.updated_at, journey_id=journey.id, record=record))
        elif not same(field, our_value, their_value):
            found.append(Finding(kind="state_mismatch", ref=record.ref, field=field, ours=our_value,
                                 theirs=their_value, theirs_updated_at=record.updated_at,
                                 journey_id=journey.id, record=record))
    return found


def compare_absent(system: str, ref: str, journey: Holding) -> Finding:
    """A reference Switchboard holds that the system does not have."""
    own = owned(system)
    held: dict[str, Any] = {}
    for field in own.compared:
        value = ours(system, journey.state, field)
        if value is not None:
            held.update({"stage": value} if field == STAGE else as_fields(field, value))
    return Finding(kind="missing_there", ref=ref, ours=held, journey_id=journey.id)


def differences(system: str, record: SnapshotRecord, state: JourneyState) -> list[str]:
    """The owned fields where the record does not hold Switchboard's value (a value we lack is no
    difference)."""
    return [field for field in owned(system).compared
            if (value := ours(system, state, field)) is not None and not same(field, value,
                                                                              theirs(record, field))]
