"""Journey state as a merge of its events (CONTRACT section 2).

Every attribute carries the key (`time|source|id`) of the event that set it, and two states merge
attribute by attribute: the stage by rank, stage times by earliest, everything else by latest key.
The merge is commutative, associative and idempotent, so the same set of events gives the same
journey whatever the order in which they arrive, however often each arrives, and however the
journeys that a link joins were split before.

The site is the one exception to "latest wins": a journey belongs to the system that placed it (the
system of its earliest event, by key), and its site is the latest site *that* system said. Every other
system's word on the site is kept too (`sites`, per authority) but decides nothing, so a foreign system
never moves a journey, and nothing is refused for it: refusing would depend on which event arrived
first, and the same events must give the same journey, site included, in any order. A link that joins
journeys at different sites is no exception: the joined journey belongs to whichever system placed the
earliest of all their events, and sits where that system last said. What a connector may claim at all is
decided before apply, whatever the order (its system, its references, its profile's sites:
`backend/ingest/validate.py`).

An event published for one site only (by a connector limited to sites: its `scope`) speaks for that site
alone: its authority is `<system>@<site>`, and what it says of the journey (stage, times, counter...) is
kept apart, in `scoped`, and counts only while the journey sits at that site. So a connector of `north`
neither moves a journey that another authority placed at `south` nor changes its stage, in any order of
arrival (event times are trusted: an event dated before all others places the journey, whoever sent it):
the journey is a function of the set of (event, scope) pairs, as before of events.
"""

from __future__ import annotations

from datetime import UTC, datetime
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
    # derived: `sites[placed_by]`, kept stored because everything reads the journey's site from it
    site: Stamped | None = None
    # the system of the earliest event (its key, its site authority): the system that owns the site
    placed_by: Stamped | None = None
    # per site authority, the latest site it said
    sites: dict[str, Stamped] = {}
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
    # per authority of one site (`<system>@<site>`), what its events said: counted only at that site
    scoped: dict[str, JourneyState] = {}
    # with `scoped`, what all other events said; the fields above are then the view: `base` and the
    # `scoped` parts of the journey's site, merged
    base: JourneyState | None = None

    def value(self, name: str) -> Any:
        stamped = getattr(self, name)
        return None if stamped is None else stamped.value


_LATEST_FIELDS = tuple(f for f in JourneyState.__struct_fields__
                       if f not in ("stage", "reached", "site", "placed_by", "sites", "scoped", "base"))


def site_authority(event: CloudEvent, scope: str | None = None) -> str:
    """Who an event speaks for about a site: its source's system, except Switchboard's own corrective events,
    which speak for the system of record named by their subject (they are signed by the backend); an event
    published for one site only speaks for `<system>@<site>` (no system or site holds an `@`)."""
    system = event.subject.split(":", 1)[0] if event.system == "switchboard" else event.system
    return system if scope is None else f"{system}@{scope}"


def _placed(state: JourneyState) -> JourneyState:
    """A state stored before sites had owners: its latest site's event placed it."""
    if state.placed_by is None and state.site is not None:
        owner = state.site.key.split("|", 2)[1].split("/", 2)[1]
        state.placed_by = Stamped(state.site.key, owner)
        state.sites = {owner: state.site}
    return state


def _own_site(state: JourneyState) -> Stamped | None:
    return None if state.placed_by is None else state.sites.get(state.placed_by.value)


def _stage_key(stage: str, event_key: str) -> str:
    # A final stage outranks every forward one; between finals the latest event wins.
    return f"9|{event_key}" if stage in FINAL_STAGES else f"{_STAGE_RANK[stage]}|"


def _latest(a: Stamped | None, b: Stamped | None) -> Stamped | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if a.key >= b.key else b


def _earliest(a: Stamped | None, b: Stamped | None) -> Stamped | None:
    if a is None:
        return b
    if b is None:
        return a
    return a if a.key <= b.key else b


def _attributes(a: JourneyState, b: JourneyState) -> JourneyState:
    """What two states say of the journey itself (every field but its site's), merged."""
    # every field in _LATEST_FIELDS is a `Stamped | None`: mypy cannot tie the names to their types
    merged = JourneyState(**{name: _latest(getattr(a, name), getattr(b, name))  # type: ignore[arg-type]
                             for name in _LATEST_FIELDS})
    merged.stage = _latest(a.stage, b.stage)
    reached = dict(a.reached)
    for stage, at in b.reached.items():
        if stage not in reached or _before(at, reached[stage]):
            reached[stage] = at
    merged.reached = reached
    return merged


def _base(state: JourneyState) -> JourneyState:
    return state if state.base is None else state.base


def _part(state: JourneyState) -> JourneyState:
    """A state's attributes alone (not its site's), as a part `fold` may change without touching `state`."""
    return JourneyState(**{name: getattr(state, name) for name in _LATEST_FIELDS},
                        stage=state.stage, reached=dict(state.reached))


def _show(state: JourneyState) -> None:
    """Make `state`'s attributes its view again: its base and the parts of the site it now sits at."""
    view = state.base or JourneyState()
    here = state.value("site")
    for authority, part in state.scoped.items():
        if authority.partition("@")[2] == here:
            view = _attributes(view, part)
    for name in _LATEST_FIELDS:
        setattr(state, name, getattr(view, name))
    state.stage, state.reached = view.stage, dict(view.reached)


def merge(a: JourneyState, b: JourneyState) -> JourneyState:
    a, b = _placed(a), _placed(b)
    merged = _attributes(_base(a), _base(b))
    merged.placed_by = _earliest(a.placed_by, b.placed_by)
    merged.sites = {system: _latest(a.sites.get(system), b.sites.get(system))  # type: ignore[misc]
                    for system in a.sites.keys() | b.sites.keys()}
    merged.site = _own_site(merged)
    if a.scoped or b.scoped:
        merged.base = _part(merged)
        merged.scoped = {authority: _part(part) for authority, part in a.scoped.items()}
        for authority, part in b.scoped.items():
            mine = merged.scoped.get(authority)
            merged.scoped[authority] = _part(part) if mine is None else _attributes(mine, part)
        _show(merged)
    return merged


def _utc(moment: datetime) -> str:
    """In UTC: the stage times of one journey come from systems in any zone, and are compared."""
    return moment.astimezone(UTC).isoformat()


def _before(a: str, b: str) -> bool:
    """Whether the moment `a` (ISO 8601) is before `b`: as text when both are in UTC (every time stored since
    2026-12-07), else as moments (one offset's text sorts before another's whatever the moments)."""
    if a.endswith("+00:00") and b.endswith("+00:00"):
        return a < b
    return datetime.fromisoformat(a) < datetime.fromisoformat(b)


def contributions(event: CloudEvent) -> tuple[list[tuple[str, Stamped]], dict[str, str]]:
    """What a single journey event says: stamped attribute values, and the stage times it reaches."""
    key = event.key
    at = _utc(event.time)
    values: list[tuple[str, Stamped]] = []
    reached: dict[str, str] = {}

    def reach(stage: str) -> None:
        values.append(("stage", Stamped(_stage_key(stage, key), stage)))
        if stage in _TIMED_STAGES or stage in FINAL_STAGES:
            reached[stage] = at

    match event:
        case AppointmentBooked(data=d):
            reach("booked")
            values += [("service", Stamped(key, d.service)), ("channel", Stamped(key, d.channel)),
                       ("slot_start", Stamped(key, d.slot_start.isoformat()))]
        case AppointmentRescheduled(data=d):
            values.append(("slot_start", Stamped(key, d.slot_start.isoformat())))
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
    if not state.scoped:
        return msgspec.structs.replace(state, reached=dict(state.reached), sites=dict(state.sites))
    parts = {authority: _part(part) for authority, part in state.scoped.items()}
    return msgspec.structs.replace(state, reached=dict(state.reached), sites=dict(state.sites),
                                   base=_part(_base(state)), scoped=parts)


def _take(target: JourneyState, values: list[tuple[str, Stamped]], reached: dict[str, str]) -> None:
    for name, stamped in values:
        current = getattr(target, name)
        if current is None or stamped.key > current.key:
            setattr(target, name, stamped)
    for stage, at in reached.items():
        if stage not in target.reached or _before(at, target.reached[stage]):
            target.reached[stage] = at


def fold(state: JourneyState, event: CloudEvent, scope: str | None = None) -> JourneyState:
    """`merge(state, <what the event says, published for the site scope>)`, computed in place: the per-event
    hot path. The attributes of an event of a scope go to its part, and to the view only while they count."""
    _placed(state)
    key, authority = event.key, site_authority(event, scope)
    if state.placed_by is None or key < state.placed_by.key:
        state.placed_by = Stamped(key, authority)
    claim = state.sites.get(authority)
    if claim is None or key > claim.key:
        state.sites[authority] = Stamped(key, event.data.site)
    was = state.site  # (read only off the hot path below)
    state.site = _own_site(state)
    values, reached = contributions(event)
    if scope is None and not state.scoped:
        _take(state, values, reached)
        return state
    if not state.scoped:  # its first event of a scope: what was said so far is the base
        state.base, state.scoped = _part(state), {}  # (the empty dict may be the original's, after `copy`)
    target = _base(state) if scope is None else state.scoped.setdefault(authority, JourneyState())
    _take(target, values, reached)
    here = state.value("site")
    if here != (None if was is None else was.value):
        _show(state)
    elif scope is None or scope == here:
        _take(state, values, reached)
    return state
