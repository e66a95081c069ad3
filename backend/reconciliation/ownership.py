"""Which system owns which part of a journey: what a run compares per system, and which way a repair goes.

A system is the record for the stages and fields it owns; the others it may hold are not compared.
Values are compared in the form a snapshot carries them (`SnapshotRecord.fields`), so `ours` and
`theirs` read alike and `push_ours` sends ours in the system's own terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from backend.journeys.merge import FINAL_STAGES, FORWARD_STAGES, JourneyState
from switchboard.privacy import redact
from switchboard.snapshots import SnapshotRecord

STAGE = "stage"
_RANK = {stage: rank for rank, stage in enumerate(FORWARD_STAGES)}
# a field a record states in several of its `fields` (see `theirs` and `as_fields`)
_IN_RECORD = {"last_interaction": ("last_interaction", "outcome")}


@dataclass(frozen=True)
class Owned:
    stages: frozenset[str]
    fields: tuple[str, ...]
    # record fields read, not compared, to build a corrective event (the queue's ticket names its queue)
    read_too: tuple[str, ...] = ()

    @property
    def compared(self) -> tuple[str, ...]:
        return ((STAGE,) if self.stages else ()) + self.fields

    @property
    def record_fields(self) -> frozenset[str]:
        """The names, in a snapshot record's `fields`, of what is compared or read: all a stored record
        keeps."""
        in_record = (name for field in self.fields for name in _IN_RECORD.get(field, (field,)))
        return frozenset(in_record) | set(self.read_too)


OWNERSHIP: dict[str, Owned] = {
    "appointments": Owned(frozenset({"booked", "cancelled", "no_show"}), ("service", "slot_start")),
    "queue": Owned(frozenset({"arrived", "waiting", "called", "in_service", "completed"}),
                   ("ticket", "counter"), read_too=("service",)),
    "core": Owned(frozenset(), ("eligibility",)),
    "crm": Owned(frozenset(), ("priority",)),
    "contact_center": Owned(frozenset(), ("last_interaction",)),
}
# a registered system outside the map owns nothing: its records are only checked for presence
_NOTHING = Owned(frozenset(), ())


def owned(system: str) -> Owned:
    return OWNERSHIP.get(system, _NOTHING)


def kept(system: str, record: SnapshotRecord) -> SnapshotRecord:
    """The record as Switchboard may hold it: only the fields the map has it compare or read, and those
    redacted as events are judged (a connector's record may carry anything, a name or an e-mail address)."""
    wanted = owned(system).record_fields
    return msgspec.structs.replace(
        record, fields=redact({k: v for k, v in record.fields.items() if k in wanted}, codes=True))


def stage_seen_by(system: str, stage: str | None) -> str | None:
    """The journey's stage as `system` would record it: the appointment tool still says `booked` of a
    customer who came (arrived … completed), since attending is not its business."""
    if stage is None or stage == "open":
        return None
    own = owned(system).stages
    if stage in own or stage not in _RANK:
        return stage
    below = [s for s in own if s in _RANK and _RANK[s] < _RANK[stage]]
    return max(below, key=_RANK.__getitem__) if below else stage


def ours(system: str, state: JourneyState, field: str) -> Any:
    """Switchboard's value of `field`, in the form `system`'s snapshot carries it."""
    match field:
        case "stage":
            return stage_seen_by(system, state.value("stage"))
        case "ticket":
            return (state.value("ticket") or {}).get("ticket")
        case "eligibility":
            return (state.value("eligibility") or {}).get("result")
        case "priority":
            return state.value("priority") or "normal"
        case "last_interaction":
            interaction = state.value("last_interaction")
            return {"reason_code": interaction["reason_code"],
                    "outcome": interaction["outcome"]} if interaction else None
        case _:
            return state.value(field)


def theirs(record: SnapshotRecord, field: str) -> Any:
    """The system's value of `field`; None when its record does not state it."""
    if field == STAGE:
        return record.stage
    if field == "last_interaction":
        reason = record.fields.get("last_interaction")
        return None if reason is None else {"reason_code": reason, "outcome": record.fields.get("outcome")}
    return record.fields.get(field)


def same(field: str, a: Any, b: Any) -> bool:
    if field == "slot_start" and isinstance(a, str) and isinstance(b, str):
        try:
            return datetime.fromisoformat(a) == datetime.fromisoformat(b)
        except ValueError:
            return a == b
    return bool(a == b)


def as_fields(field: str, value: Any) -> dict[str, Any]:
    """`field`'s value as the system's record fields (what `record.push` sends)."""
    if field == "last_interaction":
        return {"last_interaction": value["reason_code"], "outcome": value["outcome"]}
    return {field: value}


def pushed_state(system: str, state: JourneyState) -> tuple[str | None, dict[str, Any]]:
    """The stage and fields `push_ours` sends `system`: ours, for what it owns."""
    own = owned(system)
    stage = ours(system, state, STAGE) if own.stages else None
    fields: dict[str, Any] = {}
    for field in own.fields:
        value = ours(system, state, field)
        if value is not None:
            fields.update(as_fields(field, value))
    return (stage if stage in own.stages else None), fields


def stage_move(current: str | None, wanted: str) -> str | None:
    """Why the journey cannot take stage `wanted` from an event (None: it can).

    The merge only moves stages forward, and a final stage is only ever replaced by a later final one.
    """
    if current is None or current == "open" or current == wanted:
        return None
    if current in FINAL_STAGES:
        if wanted in FINAL_STAGES and current != "completed" and wanted != "completed":
            return None  # cancelled and no_show, both the appointment tool's: the later one wins
        return f"the journey is {current}, a final stage that the merge never leaves"
    if wanted in FINAL_STAGES or _RANK.get(wanted, -1) > _RANK.get(current, -1):
        return None
    return f"the journey is at {current}, past {wanted}: the merge only moves stages forward"
