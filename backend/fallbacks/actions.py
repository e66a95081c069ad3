"""Manual steps during a fallback: each one a canonical event from `/manual/<user>`, published on NATS
and applied by the apply worker like any other, then written to the fallback's ledger.

A step runs in one transaction holding the fallback's row: steps of one fallback are numbered in the
order they happened, and ending the fallback waits for a step in progress. The answer comes once the
event is applied (the journey shows it), or says the event is on its way when the apply worker is
slower than `manual_apply_timeout_s`: it is then in the ledger already and applies when its turn comes.
An event the apply worker refuses is a failure like any other; the step then leaves no ledger entry
and no ticket number used.
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
from backend.fallbacks import services
from backend.fallbacks.schemas import ActionResult, ManualAction
from backend.reconciliation.ownership import owned
from backend.resources import Resources
from switchboard.events import Event, nats_msg_id, nats_subject

EVENT_TYPES = {"check_in": "customer.arrived", "issue_ticket": "ticket.issued", "call": "ticket.called",
               "start": "service.started", "complete": "service.completed"}
DEFAULT_QUEUE = "manual"
_POLL_S = 0.05


class Refused(Exception):
    """The apply worker refused the step's event: it is a failure, the step is undone."""

    def __init__(self, failure_id: int, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.failure_id, self.kind, self.reason = failure_id, kind, reason


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
    return f"{namespace}:W-{uuid.uuid4().hex[:12]}"


async def _next_ticket(conn: asyncpg.Connection, site: str) -> tuple[str, str]:
    """The site's next manual ticket today (UTC day) and its reference; the row lock makes numbers distinct."""
    row = await conn.fetchrow(
        "INSERT INTO manual_tickets (site, day, last) VALUES ($1, (now() AT TIME ZONE 'UTC')::date, 1)"
        " ON CONFLICT (site, day) DO UPDATE SET last = manual_tickets.last + 1 RETURNING day, last", site)
    ticket = f"M-{row['last']:03d}"
    return ticket, f"manual:{site}.{row['day']:%Y%m%d}.{ticket}"


async def _await_applied(conn: asyncpg.Connection, source: str, event_id: str,
                         timeout_s: float) -> asyncpg.Record | None:
    """The applied event's row; None if it is not applied within `timeout_s`; `Refused` if it failed."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        applied = await conn.fetchrow("SELECT journey_id FROM events WHERE source = $1 AND id = $2", source, event_id)
        if applied is not None:
            return applied
        failure = await conn.fetchrow("SELECT id, kind, reason FROM failures WHERE event_source = $1 AND event_id = $2",
                                      source, event_id)
        if failure is not None:
            raise Refused(failure["id"], failure["kind"], failure["reason"])
        if asyncio.get_running_loop().time() > deadline:
            return None
        await asyncio.sleep(_POLL_S)


async def perform(resources: Resources, principal: Principal, fallback_id: int, step: ManualAction) -> ActionResult:
    _check_fields(step)
    user = services.manual_user(principal, resources)
    source = f"/manual/{user}"
    async with resources.pool.acquire() as conn:
        try:
            async with conn.transaction():
                result = await _perform_locked(conn, resources, principal, fallback_id, step, source, user)
        except Refused as refused:
            await audit.record(conn, principal, action="fallback.action", target=f"fallback:{fallback_id}",
                               reason=None, result={"action": step.action, "ref": step.ref, "outcome": "refused",
                                                    "failure_id": refused.failure_id, "kind": refused.kind})
            raise ClientException(f"the {step.action} event was refused ({refused.kind}): {refused.reason}",
                                  extra={"failure_id": refused.failure_id}) from None
        await services.publish_fallback(conn, fallback_id)
    return result


async def _perform_locked(conn: asyncpg.Connection, resources: Resources, principal: Principal, fallback_id: int,
                          step: ManualAction, source: str, user: str) -> ActionResult:
    fallback = await services.locked(conn, principal, fallback_id)
    if fallback["status"] != "active":
        raise services.ConflictException(f"this fallback is {fallback['status']}: manual steps are over")
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
    event = msgspec.convert({"specversion": "1.0", "id": uuid.uuid4().hex, "source": source,
                             "type": EVENT_TYPES[step.action], "subject": ref, "time": datetime.now(UTC),
                             "data": data}, Event)  # type: ignore[arg-type]
    try:
        await resources.js.publish(nats_subject(event), msgspec.json.encode(event),
                                   headers={"Nats-Msg-Id": nats_msg_id(event.source, event.id)})
    except (NatsError, TimeoutError) as exc:
        raise ServiceUnavailableException("the event bus is unavailable; nothing was done, try again") from exc
    applied = await _await_applied(conn, event.source, event.id, resources.settings.manual_apply_timeout_s)
    journey_id = applied["journey_id"] if applied else None
    stage = await conn.fetchval("SELECT stage FROM journeys WHERE id = $1", journey_id) if journey_id else None
    seq = await conn.fetchval(
        "INSERT INTO fallback_ledger (fallback_id, seq, action, ref, journey_id, event_source, event_id, actor, data)"
        " SELECT $1, coalesce(max(seq), 0) + 1, $2, $3, $4, $5, $6, $7, $8::jsonb FROM fallback_ledger"
        " WHERE fallback_id = $1 RETURNING seq",
        fallback_id, step.action, ref, journey_id, event.source, event.id, user, msgspec.json.encode(data).decode())
    result = ActionResult(fallback_id=fallback_id, seq=seq, action=step.action, ref=ref, event_source=event.source,
                          event_id=event.id, applied=applied is not None, journey_id=journey_id, stage=stage,
                          ticket=ticket, ticket_ref=ticket_ref)
    await audit.record(conn, principal, action="fallback.action", target=f"fallback:{fallback_id}", reason=None,
                       result=msgspec.to_builtins(result))
    return result
