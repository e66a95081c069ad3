"""What resolving a drift item would do, decided before anything changes: the action, the change, whether it
can.

`accept_source` takes the system's record: corrective events from `/switchboard`, built from the record
the run read, applied like any other. They can only do what the merge does (stages move forward, a final
stage stays), so an accept that would need a stage to move back is said to be impossible rather than
sent for nothing. `push_ours` sends our state of the reference to the system (`record.push`).
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec

from backend.journeys.merge import JourneyState
from backend.reconciliation.ownership import STAGE, owned, stage_move
from backend.reconciliation.schemas import Action, RepairPlan
from switchboard.events import EVENT_TYPES, CloudEvent
from switchboard.snapshots import SnapshotRecord

OWN_SOURCE = "/switchboard"
_decode_record = msgspec.json.Decoder(SnapshotRecord).decode
# what a corrective event says where the catalogue wants a code Switchboard cannot know
RECONCILED = "RECONCILED"


class NotPossible(Exception):  # noqa: N818 - an answer, not a bug
    """A repair that cannot be made as asked; the message says why."""


def _json(value: Any) -> Any:
    return None if value is None else msgspec.json.decode(value)


def record_of(row: Mapping[str, Any]) -> SnapshotRecord | None:
    return None if row["record"] is None else _decode_record(row["record"])


def proposed_action(row: Mapping[str, Any]) -> Action:
    """The direction the ownership map gives: the system of record wins, except for what staff did by hand."""
    match row["kind"]:
        case "missing_here":
            return "accept_source"
        case "missing_there":
            return "push_ours"
    if row["fallback_id"] is not None and not row["conflict"]:
        return "push_ours"
    if row["kind"] == "state_mismatch" and row["field"] == STAGE:
        current = (_json(row["ours"]) if row["ours"] is not None else None)
        their_stage = _json(row["theirs"])
        if isinstance(their_stage, str) and stage_move(current, their_stage) is not None:
            return "push_ours"
    return "accept_source"


def plan(row: Mapping[str, Any], action: Action, state: JourneyState | None, *,
         links_elsewhere: Collection[str]) -> RepairPlan:
    """What resolving the item with `action` would do, from its journey's `state` and `links_elsewhere`: those
    of its record's links held by journeys of another site than the item's."""
    ours, theirs = _json(row["ours"]), _json(row["theirs"])
    common = {"drift_id": row["id"], "ref": row["ref"], "kind": row["kind"], "field": row["field"],
              "action": action}
    if action == "ignore":
        return RepairPlan(**common, changes=None, from_=None, to=None, possible=True,
                          note="nothing changes anywhere; the item is closed with the reason")
    # the run compared the journeys of its site: one that has moved since is another site's to reconcile
    # (a correction, dated now, would outrank whatever moved it)
    here = state.value("site") if state else None
    moved = None if here in (None, row["site"]) else (f"the journey is at {here} now, not {row['site']}:"
                                                      f" reconcile {here}, or ignore")
    if action == "push_ours":
        possible, note = True, None
        if state is None:
            possible, note = False, "Switchboard holds no journey for this reference: nothing of ours to push"
        elif moved:
            possible, note = False, moved
        elif row["conflict"]:
            note = "the system changed this record during the fallback: pushing overwrites its change"
        return RepairPlan(**common, changes=row["system"], from_=theirs, to=ours, possible=possible,
                          note=note)
    try:
        if moved:
            raise NotPossible(moved)
        # a correction speaks for the whole system, not for the site the run read: the links it carries
        # would join another site's journey and move it here
        if links_elsewhere:
            raise NotPossible("its links lead to journeys at another site: reconcile there, or ignore")
        events = corrective_events(row, state)
    except NotPossible as exc:
        return RepairPlan(**common, changes="switchboard", from_=ours, to=theirs, possible=False,
                          note=str(exc))
    return RepairPlan(**common, changes="switchboard", from_=ours, to=theirs, possible=True,
                      note=f"{len(events)} event(s) from /switchboard: {', '.join(e.type for e in events)}")


def corrective_events(row: Mapping[str, Any], state: JourneyState | None) -> list[CloudEvent]:
    """The events from `/switchboard` that make the journey hold the system's record; NotPossible says why
    not."""
    record = record_of(row)
    if row["kind"] == "missing_there" or record is None:
        raise NotPossible("the system has no record to take: Switchboard does not forget a reference;"
                          " push_ours or ignore")
    system, field = row["system"], row["field"]
    now = datetime.now(UTC)
    # the same repair of the item as it stands makes the same event ids: published again after a commit that
    # failed, they are duplicates, not a second repair; the item found again (updated) makes new ones
    ids = (f"reconcile-{row['id']}-{row['updated_at'].timestamp():.6f}-{n}" for n in itertools.count())
    if row["kind"] == "missing_here":
        made_all = [m for f in owned(system).compared if (m := _for_field(system, f, record, state))]
        events = [_event(type_, data, record, now, next(ids)) for type_, data in made_all]
        if not events:
            raise NotPossible(f"{system} owns nothing of a journey that Switchboard could take from its"
                              " record")
        events[0] = msgspec.structs.replace(events[0], data=msgspec.structs.replace(
            events[0].data, links=list(record.links)))
        return events
    if field == STAGE:
        current = state.value("stage") if state else None
        if record.stage is None:
            raise NotPossible("the system's record states no stage")
        if row["kind"] == "stale" and current == record.stage:
            raise NotPossible(f"the system also holds {current}: nothing to take from it; ignore with a"
                              " reason, or settle it on the floor")
        if why := stage_move(current, record.stage):
            raise NotPossible(why)
    made = _for_field(system, field, record, state)
    if made is None:
        raise NotPossible(f"no event of the catalogue sets {field} from {system}'s record")
    return [_event(*made, record, now, next(ids))]


def _for_field(system: str, field: str, record: SnapshotRecord,
               state: JourneyState | None) -> tuple[str, dict[str, Any]] | None:
    """The catalogue event (type, data) that sets `field` as the record holds it."""
    f = record.fields
    match field:
        case "stage":
            return _for_stage(record, state) if record.stage in owned(system).stages else None
        case "service":
            return _booked(record, state)
        case "slot_start":
            if not f.get("slot_start"):
                return None
            return "appointment.rescheduled", {"slot_start": f["slot_start"]}
        case "ticket":
            return _ticket(record)
        case "counter":
            if not f.get("counter"):
                return None
            return ("ticket.called" if record.stage == "called" else "service.started",
                    {"counter": f["counter"]})
        case "eligibility":
            return ("eligibility.checked", {"result": f["eligibility"]}) if f.get("eligibility") else None
        case "priority":
            return ("customer.priority_changed", {"priority": f["priority"]}) if f.get("priority") else None
        case "last_interaction":
            if not f.get("last_interaction"):
                return None
            earlier = state.value("last_interaction") if state else None
            return ("interaction.logged", {"channel": (earlier or {}).get("channel", "phone"),
                                           "reason_code": f["last_interaction"],
                                           "outcome": f.get("outcome", RECONCILED)})
    return None


def _booked(record: SnapshotRecord, state: JourneyState | None) -> tuple[str, dict[str, Any]] | None:
    f = record.fields
    if not (f.get("service") and f.get("slot_start")):
        return None
    channel = (state.value("channel") if state else None) or "branch"
    return "appointment.booked", {"service": f["service"], "slot_start": f["slot_start"], "channel": channel}


def _ticket(record: SnapshotRecord) -> tuple[str, dict[str, Any]] | None:
    ticket = record.fields.get("ticket")
    return ("ticket.issued", {"ticket": ticket, "queue_name": record.fields.get("service") or "general"}) \
        if ticket else None


def _for_stage(record: SnapshotRecord, state: JourneyState | None) -> tuple[str, dict[str, Any]] | None:
    counter = record.fields.get("counter") or "unknown"
    match record.stage:
        case "booked":
            return _booked(record, state)
        case "cancelled":
            return "appointment.cancelled", {"reason_code": RECONCILED}
        case "no_show":
            return "appointment.no_show", {}
        case "arrived":
            return "customer.arrived", {}
        case "waiting":
            return _ticket(record)
        case "called":
            return "ticket.called", {"counter": counter}
        case "in_service":
            return "service.started", {"counter": counter}
        case "completed":
            return "service.completed", {"outcome": RECONCILED}
    return None


def _event(type_: str, data: dict[str, Any], record: SnapshotRecord, now: datetime,
           event_id: str) -> CloudEvent:
    try:
        return msgspec.convert({
            "specversion": "1.0", "id": event_id, "source": OWN_SOURCE,
            "subject": record.ref, "time": now, "datacontenttype": "application/json",
            "data": {"site": record.site, **data},
        }, EVENT_TYPES[type_])
    except msgspec.ValidationError as exc:
        raise NotPossible(f"the system's record does not make a valid {type_} event: {exc}") from exc
