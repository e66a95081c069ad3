"""Manual steps during a fallback: each one a canonical event from `/manual/<user>`, signed as the
backend's own, published on NATS and applied by the apply worker like any other.

A step is first written, in one short transaction holding the fallback's row, to the fallback's ledger
(with its ticket number) and to the audit log; its event is published after the commit, so whatever
fails afterwards the ledger and the audit know the step, and a re-publish (the replay re-sends an event
that never settled) is harmless thanks to the message id. Steps of one fallback are numbered in the
order they happened, and ending the fallback waits only for a step being written.

The answer then waits, without a connection or a lock held, until the event is applied (the journey
shows it) or says the event is on its way when the apply worker is slower than `manual_apply_timeout_s`.
An event the apply worker refuses is a failure like any other; its step stays in the ledger as `refused`
(its ticket number is used) and the replay skips it.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
from litestar.exceptions import (
    ClientException,
    NotFoundException,
    PermissionDeniedException,
    ServiceUnavailableException,
)
from nats.errors import Error as NatsError

from backend.audit import services as audit
from backend.auth import Principal
from backend.errors import ConflictException
from backend.fallbacks import services
from backend.fallbacks.schemas import STEPS, ActionResult, ManualAction, StepStatus
from backend.ingest import own_events
from backend.journeys.merge import FINAL_STAGES, JourneyState
from backend.reconciliation.ownership import owned
from backend.resources import Resources
from backend.sites.config import SiteDirectory, SiteSettings
from switchboard.events import Event
from switchboard.privacy import looks_personal_identifier

EVENT_TYPES = {"check_in": "customer.arrived", "issue_ticket": "ticket.issued", "call": "ticket.called",
               "recall": "ticket.called", "no_show": "appointment.no_show", "transfer": "ticket.issued",
               "start": "service.started", "complete": "service.completed",
               "book_walk_in": "appointment.booked", "mark_unverified": "eligibility.checked",
               "verify": "eligibility.checked", "set_priority": "customer.priority_changed"}
# what each step needs besides its ref
_NEEDS = {"call": ("counter",), "recall": ("counter",), "start": ("counter",), "complete": ("outcome",),
          "transfer": ("queue_name",), "book_walk_in": ("service",), "verify": ("result",),
          "set_priority": ("priority",)}
DEFAULT_QUEUE = "manual"
_POLL_S = 0.05
_state = msgspec.json.Decoder(JourneyState)


class Refused(msgspec.Struct, frozen=True):
    """The apply worker refused the step's event: it is a failure."""

    failure_id: int
    kind: str
    reason: str


class Recorded(msgspec.Struct, frozen=True, kw_only=True):
    """A step in the ledger and the audit log, its event not yet published."""

    seq: int
    event: Event | None  # None: a repeated step id whose event has settled, nothing to publish
    repeated: bool = False


def _check_fields(step: ManualAction, system: str) -> None:
    steps = STEPS.get(system, ())
    if step.action not in steps:
        raise ClientException(f"{step.action} is not a manual step of a {system} fallback (its steps:"
                              f" {', '.join(steps) or 'none'})")
    walk_in = step.action == "book_walk_in" or (step.action == "check_in" and system == "queue")
    if step.action == "book_walk_in" and step.ref is not None:
        raise ClientException("book_walk_in makes the appointment's reference: send no ref")
    if step.ref is None and not walk_in:
        raise ClientException(f"{step.action} needs the journey's ref")
    if system == "appointments" and step.action == "check_in" and not (step.ref or "").startswith(
            "appointments:"):
        raise ClientException("check_in during an appointments fallback needs the appointment's reference")
    for name in ("ref", "counter", "outcome", "queue_name", "service", "reason_code", "step_id"):
        value = getattr(step, name)
        if value is not None and looks_personal_identifier(value):
            # the ledger keeps it before the event is judged: codes only, never a number or a name
            raise ClientException(f"{name} looks like personal data: send a code")
    missing = [name for name in _NEEDS.get(step.action, ()) if getattr(step, name) is None]
    if missing:
        raise ClientException(f"{step.action} needs {' and '.join(missing)}")


async def _check_journey(conn: asyncpg.Connection, principal: Principal, ref: str, site: str,
                         system: str) -> tuple[str, str, JourneyState]:
    """The reference the step is recorded under (the journey's own in the fallback's system, when it has
    one: the replay hands the system its own record), the journey's stage and its state."""
    row = await conn.fetchrow(
        "SELECT j.site, j.stage, j.state, array(SELECT o.ref FROM journey_refs o WHERE o.journey_id = j.id"
        " AND o.ref LIKE $2 ORDER BY o.ref LIMIT 1) AS own FROM journey_refs r JOIN journeys j ON j.id ="
        " r.journey_id WHERE r.ref = $1", ref, f"{system}:%")
    if row is None:
        raise NotFoundException(f"no journey has the reference {ref}; check a walk-in in without one")
    if not principal.may_see(row["site"]):
        raise PermissionDeniedException(f"{ref} is a journey outside your sites")
    if row["site"] != site:
        raise ClientException(f"{ref} is a journey of another site than this fallback's")
    own = ref if ref.startswith(f"{system}:") else (row["own"][0] if row["own"] else ref)
    return own, row["stage"], _state.decode(row["state"])


async def _check_not_called(conn: asyncpg.Connection, fallback_id: int, ref: str, stage: str) -> None:
    """A call is for a customer nobody called yet: two staff pressing "Call next" on the same list within a
    second must not both call them (the queue system would refuse the second; while it is down, this does).
    Steps recorded but not yet applied count too."""
    if stage in ("called", "in_service") or stage in FINAL_STAGES:
        raise ConflictException(f"this customer is {stage.replace('_', ' ')} already: recall them to call"
                                " them again")
    if await conn.fetchval(
            "SELECT true FROM fallback_ledger l WHERE l.fallback_id = $1"
            " AND l.action IN ('call', 'recall', 'start', 'complete') AND (l.ref = $2 OR l.ref IN"
            " (SELECT o.ref FROM journey_refs r JOIN journey_refs o ON o.journey_id = r.journey_id"
            " WHERE r.ref = $2)) LIMIT 1", fallback_id, ref):
        raise ConflictException("this customer was called already in this fallback: recall them to call them"
                                " again")


def _check_booked_today(ref: str, stage: str, state: JourneyState, site: SiteSettings) -> None:
    """A check-in while the appointments system is down names one of today's bookings at the site (the list
    `GET /api/v1/sites/<site>/bookings` gives), as Switchboard last heard of it."""
    if stage != "booked":
        raise ConflictException(f"{ref} is not an open booking: the journey is {stage}")
    slot = state.value("slot_start")
    today = site.day_of(datetime.now(UTC))
    if slot is None or site.day_of(datetime.fromisoformat(slot)) != today:
        raise ConflictException(f"{ref} is not booked for today ({today:%Y-%m-%d} at {site.site})")


def walk_in_ref(system: str) -> str:
    """A walk-in's new reference: in the namespace of the fallback's system when it is the record of arrivals
    (the queue) or of bookings (the appointments' `book_walk_in`), so the replay hands the system a record
    under a reference of its own; otherwise `manual:`."""
    namespace = system if owned(system).stages & {"arrived", "booked"} else "manual"
    # twelve hex digits are all decimal one time in 280: a reference the personal-data check would refuse
    while True:
        ref = f"{namespace}:W-{uuid.uuid4().hex[:12]}"
        if not looks_personal_identifier(ref):
            return ref


async def _next_ticket(conn: asyncpg.Connection, site: SiteSettings) -> tuple[str, str]:
    """The site's next manual ticket today (the site's own day: numbers restart at its midnight) and its
    reference; the row lock makes numbers distinct."""
    row = await conn.fetchrow(
        "INSERT INTO manual_tickets (site, day, last) VALUES ($1, $2, 1)"
        " ON CONFLICT (site, day) DO UPDATE SET last = manual_tickets.last + 1 RETURNING day, last",
        site.site, site.day_of(datetime.now(UTC)))
    ticket = f"M-{row['last']:03d}"
    return ticket, f"manual:{site.site}.{row['day']:%Y%m%d}.{ticket}"


def step_event(action: str, ref: str, source: str, event_id: str, at: datetime, data: Any) -> Event:
    """The canonical event of a manual step."""
    return msgspec.convert({"specversion": "1.0", "id": event_id, "source": source,
                            "type": EVENT_TYPES[action],
                            "subject": ref, "time": at, "data": data}, Event)


def ledger_event(row: asyncpg.Record) -> Event:
    """A step's event again from its ledger row, under its id (for a re-publish)."""
    return step_event(row["action"], row["ref"], row["event_source"], row["event_id"], row["at"],
                      msgspec.json.decode(row["data"]))


async def _settled(pool: asyncpg.Pool, source: str, event_id: str,
                   timeout_s: float) -> asyncpg.Record | Refused | None:
    """The applied event's row, or its refusal; None if neither within `timeout_s`. Each look takes a
    connection only for its query: a slow apply worker must not starve the pool it shares with the steps."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        applied = await pool.fetchrow("SELECT journey_id FROM events WHERE source = $1 AND id = $2", source,
                                      event_id)
        if applied is not None:
            return applied
        failure = await pool.fetchrow("SELECT id, kind, reason FROM failures WHERE event_source = $1 AND"
                                      " event_id = $2",
                                      source, event_id)
        if failure is not None:
            return Refused(failure["id"], failure["kind"], failure["reason"])
        if asyncio.get_running_loop().time() > deadline:
            return None
        await asyncio.sleep(_POLL_S)


async def perform(resources: Resources, principal: Principal, fallback_id: int, step: ManualAction, *,
                  wait_s: float | None = None) -> ActionResult:
    """Record the step, publish its event and wait up to `wait_s` (default `manual_apply_timeout_s`) for it
    to settle; the answer is the step as it then stands. A repeated `step_id` only reads the first step."""
    user = services.manual_user(principal, resources)
    async with resources.pool.acquire() as conn, conn.transaction():
        recorded = await _record(conn, principal, fallback_id, step, f"/manual/{user}", user, resources.sites)
    event = recorded.event
    if event is None:
        return await step_answer(resources.pool, fallback_id, recorded.seq, repeated=True)
    try:
        await own_events.publish(resources.js, own_events.signing_key(resources.settings), event)
    except (NatsError, TimeoutError) as exc:
        # the bus may have taken it all the same: the step stays, and the replay re-sends an event never
        # settled
        raise ServiceUnavailableException(
            f"the {step.action} is in the ledger (step {recorded.seq}) but the event bus did not confirm its"
            " event; repeat the step (with the same step id) to send it again, or it is sent again when the"
            " fallback ends", extra={"seq": recorded.seq, "event_id": event.id}) from exc
    timeout_s = resources.settings.fallbacks.manual_apply_timeout_s if wait_s is None else wait_s
    settled = await _settled(resources.pool, event.source, event.id, timeout_s)
    async with resources.pool.acquire() as conn, resources.live.after_commit(conn) as announce:
        if isinstance(settled, Refused):
            await _refused(conn, principal, fallback_id, recorded.seq, step, settled)
        elif settled is not None:
            await conn.execute("UPDATE fallback_ledger SET journey_id = $3 WHERE fallback_id = $1"
                               " AND seq = $2", fallback_id, recorded.seq, settled["journey_id"])
        await services.announce_fallback(conn, announce, fallback_id)
    return await step_answer(resources.pool, fallback_id, recorded.seq, repeated=recorded.repeated)


async def step_answer(pool: asyncpg.Pool | asyncpg.Connection, fallback_id: int, seq: int, *,
                      repeated: bool = False) -> ActionResult:
    """A ledger step as it stands now: applied, refused, or recorded with its event still on its way."""
    row = await pool.fetchrow(
        "SELECT l.*, e.journey_id AS applied_to, j.stage,"
        " (SELECT f.id FROM failures f WHERE f.event_source = l.event_source AND f.event_id = l.event_id"
        "  ORDER BY f.id LIMIT 1) AS failure_id"
        " FROM fallback_ledger l LEFT JOIN events e ON e.source = l.event_source AND e.id = l.event_id"
        " LEFT JOIN journeys j ON j.id = e.journey_id WHERE l.fallback_id = $1 AND l.seq = $2",
        fallback_id, seq)
    data = msgspec.json.decode(row["data"])
    status: StepStatus = ("applied" if row["applied_to"] is not None
                          else "refused" if row["failure_id"] is not None else "recorded")
    issued = row["action"] == "issue_ticket"
    return ActionResult(fallback_id=fallback_id, seq=seq, action=row["action"], ref=row["ref"],
                        event_source=row["event_source"], event_id=row["event_id"], status=status,
                        applied=status == "applied", journey_id=row["applied_to"], stage=row["stage"],
                        ticket=data.get("ticket") if issued else None,
                        ticket_ref=data["links"][0] if issued else None, step_id=row["step_id"],
                        failure_id=row["failure_id"], repeated=repeated)


async def _refused(conn: asyncpg.Connection, principal: Principal, fallback_id: int, seq: int,
                   step: ManualAction, refused: Refused) -> None:
    await conn.execute("UPDATE fallback_ledger SET replay_status = 'refused' WHERE fallback_id = $1"
                       " AND seq = $2", fallback_id, seq)
    await audit.record(conn, principal, action="fallback.action", target=f"fallback:{fallback_id}",
                       reason=None,
                       result={"seq": seq, "action": step.action, "ref": step.ref, "outcome": "refused",
                               "failure_id": refused.failure_id, "kind": refused.kind})


async def _repeated(conn: asyncpg.Connection, fallback_id: int, step: ManualAction) -> int | None:
    """The seq of the step recorded earlier under `step.step_id` in this fallback, if any."""
    if step.step_id is None:
        return None
    first = await conn.fetchrow("SELECT fallback_id, seq, action FROM fallback_ledger WHERE step_id = $1",
                                step.step_id)
    if first is None:
        return None
    if first["fallback_id"] != fallback_id or first["action"] != step.action:
        raise ConflictException(f"step id {step.step_id} names another step already: choose a new one")
    return int(first["seq"])


async def _unsettled_event(conn: asyncpg.Connection, fallback_id: int, seq: int) -> Event | None:
    """A step's event again while it is neither applied nor refused: the bus may never have taken it (a
    503, a crash before the publish), so repeating the step sends it again, under the same id (a duplicate
    if it did arrive); floor staff need not wait for the fallback's end."""
    row = await conn.fetchrow(
        "SELECT * FROM fallback_ledger l WHERE l.fallback_id = $1 AND l.seq = $2"
        " AND NOT EXISTS (SELECT 1 FROM event_inbox e WHERE e.source = l.event_source AND e.id = l.event_id)"
        " AND NOT EXISTS (SELECT 1 FROM failures f WHERE f.event_source = l.event_source"
        " AND f.event_id = l.event_id)", fallback_id, seq)
    return None if row is None else ledger_event(row)


async def _record(conn: asyncpg.Connection, principal: Principal, fallback_id: int, step: ManualAction,
                  source: str, user: str, sites: SiteDirectory) -> Recorded:
    fallback = await services.locked(conn, principal, fallback_id)  # serialises the fallback's steps
    if (seq := await _repeated(conn, fallback_id, step)) is not None:
        again = await _unsettled_event(conn, fallback_id, seq) if fallback["status"] == "active" else None
        return Recorded(seq=seq, event=again, repeated=True)
    if fallback["status"] != "active":
        raise ConflictException(f"this fallback is {fallback['status']}: manual steps are over")
    site, system = fallback["site"], fallback["system"]
    _check_fields(step, system)
    ref, state = walk_in_ref(system), None
    if step.ref is not None:
        ref, stage, state = await _check_journey(conn, principal, step.ref, site, system)
        if system == "appointments" and step.action == "check_in":
            _check_booked_today(ref, stage, state, sites.get(site))
        if step.action == "call":
            await _check_not_called(conn, fallback_id, step.ref, stage)
    data: dict[str, Any] = {"site": site}
    ticket = ticket_ref = None
    match step.action:
        case "issue_ticket":
            ticket, ticket_ref = await _next_ticket(conn, sites.get(site))
            data |= {"ticket": ticket, "queue_name": step.queue_name or DEFAULT_QUEUE, "links": [ticket_ref]}
        case "transfer":
            current = (state.value("ticket") if state else None) or {}
            if "ticket" not in current:
                raise ConflictException("transfer needs a customer with a ticket")
            data |= {"ticket": current["ticket"], "queue_name": step.queue_name}
        case "call" | "recall" | "start":
            data["counter"] = step.counter
        case "complete":
            data["outcome"] = step.outcome
        case "book_walk_in":
            data |= {"service": step.service, "slot_start": datetime.now(UTC), "channel": "branch"}
        case "mark_unverified":
            data["result"] = "unverified"
        case "verify":
            data["result"] = step.result
        case "set_priority":
            data["priority"] = step.priority
    if step.reason_code is not None and step.action in ("verify", "set_priority"):
        data["reason_code"] = step.reason_code
    event = step_event(step.action, ref, source, uuid.uuid4().hex, datetime.now(UTC), data)
    try:
        seq = await conn.fetchval(
            "INSERT INTO fallback_ledger (fallback_id, seq, action, ref, event_source, event_id, actor, data,"
            " at, step_id) SELECT $1, coalesce(max(seq), 0) + 1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9"
            " FROM fallback_ledger WHERE fallback_id = $1 RETURNING seq",
            fallback_id, step.action, ref, event.source, event.id, user,
            msgspec.json.encode(data).decode(), event.time, step.step_id)
    except asyncpg.UniqueViolationError:
        # the same step id in another fallback's step, taken meanwhile
        raise ConflictException(f"step id {step.step_id} names another step already: choose a new"
                                " one") from None
    await audit.record(conn, principal, action="fallback.action", target=f"fallback:{fallback_id}",
                       reason=None,
                       result={"seq": seq, "action": step.action, "ref": ref, "event_source": event.source,
                               "event_id": event.id, "ticket": ticket, "ticket_ref": ticket_ref,
                               "step_id": step.step_id})
    return Recorded(seq=seq, event=event)
