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
from typing import Any, NoReturn

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
from backend.fallbacks.schemas import ActionResult, ManualAction
from backend.ingest import own_events
from backend.reconciliation.ownership import owned
from backend.resources import Resources
from switchboard.events import Event
from switchboard.privacy import looks_personal_identifier

EVENT_TYPES = {"check_in": "customer.arrived", "issue_ticket": "ticket.issued", "call": "ticket.called",
               "start": "service.started", "complete": "service.completed"}
DEFAULT_QUEUE = "manual"
_POLL_S = 0.05


class Refused(msgspec.Struct, frozen=True):
    """The apply worker refused the step's event: it is a failure."""

    failure_id: int
    kind: str
    reason: str


class Recorded(msgspec.Struct, frozen=True, kw_only=True):
    """A step in the ledger and the audit log, its event not yet published."""

    seq: int
    event: Event
    ticket: str | None
    ticket_ref: str | None


def _check_fields(step: ManualAction) -> None:
    if step.ref is None and step.action != "check_in":
        raise ClientException(f"{step.action} needs the journey's ref")
    if step.action in ("call", "start") and step.counter is None:
        raise ClientException(f"{step.action} needs a counter")
    if step.action == "complete" and step.outcome is None:
        raise ClientException("complete needs an outcome")


async def _check_journey(conn: asyncpg.Connection, principal: Principal, ref: str, site: str) -> None:
    row = await conn.fetchrow("SELECT j.site FROM journey_refs r JOIN journeys j ON j.id = r.journey_id"
                              " WHERE r.ref = $1", ref)
    if row is None:
        raise NotFoundException(f"no journey has the reference {ref}; check a walk-in in without one")
    if not principal.may_see(row["site"]):
        raise PermissionDeniedException(f"{ref} is a journey outside your sites")
    if row["site"] != site:
        raise ClientException(f"{ref} is a journey of another site than this fallback's")


def walk_in_ref(system: str) -> str:
    """A walk-in's new reference: in the namespace of the fallback's system when it is the record of arrivals
    (the queue), so the replay hands the system a record under a reference of its own; otherwise `manual:`."""
    namespace = system if "arrived" in owned(system).stages else "manual"
    # twelve hex digits are all decimal one time in 280: a reference the personal-data check would refuse
    while True:
        ref = f"{namespace}:W-{uuid.uuid4().hex[:12]}"
        if not looks_personal_identifier(ref):
            return ref


async def _next_ticket(conn: asyncpg.Connection, site: str) -> tuple[str, str]:
    """The site's next manual ticket today (UTC day) and its reference; the row lock makes numbers
    distinct."""
    row = await conn.fetchrow(
        "INSERT INTO manual_tickets (site, day, last) VALUES ($1, (now() AT TIME ZONE 'UTC')::date, 1)"
        " ON CONFLICT (site, day) DO UPDATE SET last = manual_tickets.last + 1 RETURNING day, last", site)
    ticket = f"M-{row['last']:03d}"
    return ticket, f"manual:{site}.{row['day']:%Y%m%d}.{ticket}"


def step_event(action: str, ref: str, source: str, event_id: str, at: datetime, data: Any) -> Event:
    """The canonical event of a manual step; from its ledger row the same event again (for a re-publish)."""
    return msgspec.convert({"specversion": "1.0", "id": event_id, "source": source,
                            "type": EVENT_TYPES[action],
                            "subject": ref, "time": at, "data": data}, Event)


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


async def perform(resources: Resources, principal: Principal, fallback_id: int,
                  step: ManualAction) -> ActionResult:
    _check_fields(step)
    user = services.manual_user(principal, resources)
    async with resources.pool.acquire() as conn, conn.transaction():
        recorded = await _record(conn, principal, fallback_id, step, f"/manual/{user}", user)
    event = recorded.event
    try:
        await own_events.publish(resources.js, own_events.signing_key(resources.settings), event)
    except (NatsError, TimeoutError) as exc:
        # the bus may have taken it all the same: the step stays, and the replay re-sends an event never
        # settled
        raise ServiceUnavailableException(
            f"the {step.action} is in the ledger (step {recorded.seq}) but the event bus did not confirm its"
            " event; it is sent again when the fallback ends: do not repeat the step",
            extra={"seq": recorded.seq, "event_id": event.id}) from exc
    settled = await _settled(resources.pool, event.source, event.id,
                             resources.settings.manual_apply_timeout_s)
    if isinstance(settled, Refused):
        await _refused(resources, principal, fallback_id, recorded.seq, step, settled)
    journey_id = settled["journey_id"] if settled else None
    stage = None
    if journey_id is not None:
        async with resources.pool.acquire() as conn:
            await conn.execute("UPDATE fallback_ledger SET journey_id = $3 WHERE fallback_id = $1 AND seq ="
                               " $2",
                               fallback_id, recorded.seq, journey_id)
            stage = await conn.fetchval("SELECT stage FROM journeys WHERE id = $1", journey_id)
    await services.publish_fallback(resources, fallback_id)
    return ActionResult(fallback_id=fallback_id, seq=recorded.seq, action=step.action, ref=event.subject,
                        event_source=event.source, event_id=event.id, applied=settled is not None,
                        journey_id=journey_id, stage=stage, ticket=recorded.ticket,
                        ticket_ref=recorded.ticket_ref)


async def _refused(resources: Resources, principal: Principal, fallback_id: int, seq: int, step: ManualAction,
                   refused: Refused) -> NoReturn:
    async with resources.pool.acquire() as conn, conn.transaction():
        await conn.execute("UPDATE fallback_ledger SET replay_status = 'refused' WHERE fallback_id = $1 AND"
                           " seq = $2",
                           fallback_id, seq)
        await audit.record(conn, principal, action="fallback.action", target=f"fallback:{fallback_id}",
                           reason=None,
                           result={"seq": seq, "action": step.action, "ref": step.ref, "outcome": "refused",
                                   "failure_id": refused.failure_id, "kind": refused.kind})
    await services.publish_fallback(resources, fallback_id)
    raise ClientException(f"the {step.action} event was refused ({refused.kind}): {refused.reason}",
                          extra={"failure_id": refused.failure_id, "seq": seq})


async def _record(conn: asyncpg.Connection, principal: Principal, fallback_id: int, step: ManualAction,
                  source: str, user: str) -> Recorded:
    fallback = await services.locked(conn, principal, fallback_id)
    if fallback["status"] != "active":
        raise ConflictException(f"this fallback is {fallback['status']}: manual steps are over")
    site = fallback["site"]
    ref = step.ref or walk_in_ref(fallback["system"])
    if step.ref is not None:
        await _check_journey(conn, principal, step.ref, site)
    data: dict[str, Any] = {"site": site}
    ticket = ticket_ref = None
    match step.action:
        case "issue_ticket":
            ticket, ticket_ref = await _next_ticket(conn, site)
            data |= {"ticket": ticket, "queue_name": step.queue_name or DEFAULT_QUEUE, "links": [ticket_ref]}
        case "call" | "start":
            data["counter"] = step.counter
        case "complete":
            data["outcome"] = step.outcome
    event = step_event(step.action, ref, source, uuid.uuid4().hex, datetime.now(UTC), data)
    seq = await conn.fetchval(
        "INSERT INTO fallback_ledger (fallback_id, seq, action, ref, event_source, event_id, actor, data, at)"
        " SELECT $1, coalesce(max(seq), 0) + 1, $2, $3, $4, $5, $6, $7::jsonb, $8 FROM fallback_ledger"
        " WHERE fallback_id = $1 RETURNING seq",
        fallback_id, step.action, ref, event.source, event.id, user, msgspec.json.encode(data).decode(),
        event.time)
    await audit.record(conn, principal, action="fallback.action", target=f"fallback:{fallback_id}",
                       reason=None,
                       result={"seq": seq, "action": step.action, "ref": ref, "event_source": event.source,
                               "event_id": event.id, "ticket": ticket, "ticket_ref": ticket_ref})
    return Recorded(seq=seq, event=event, ticket=ticket, ticket_ref=ticket_ref)
