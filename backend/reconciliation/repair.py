"""Resolving drift: one item or every item a previewed filter matched, each in one transaction with its audit
row.

A repair is not called done when it is sent: the item is `repairing` until `verify` reads the record
again (after the corrective events are applied, or the pushed command is answered) and finds the
drift gone. Ignoring closes the item at once, with the reason.
"""

from __future__ import annotations

import hashlib
import uuid
from operator import itemgetter
from typing import Any

import asyncpg
import msgspec
from litestar.exceptions import ValidationException

from backend.audit import services as audit
from backend.auth import Principal
from backend.errors import ConflictException
from backend.ingest import own_events
from backend.ingest.own_events import signing_key
from backend.journeys.merge import JourneyState
from backend.paging import decode_cursor, encode_cursor
from backend.privacy import acting_user, scrubbed_reason
from backend.reconciliation import live, services
from backend.reconciliation.ownership import pushed_state
from backend.reconciliation.plans import NotPossible, corrective_events, plan, proposed_action, record_of
from backend.reconciliation.schemas import (
    Action,
    BulkPreview,
    BulkResolveResult,
    DriftFilter,
    RepairPlan,
    ResolveResult,
)
from backend.resources import Resources
from backend.visibility import visible
from switchboard.commands import RECORD_PUSH

_state = msgspec.json.Decoder(JourneyState)
_encode = msgspec.json.encode
# a bulk resolve's selection at most: every item is planned (a read each) and held locked while it acts
BULK_RESOLVE_MAX = 500
# the principal of what Switchboard does by itself (auto-repair, a fallback's replay), in the audit log
SWITCHBOARD = Principal(sub="switchboard", roles=frozenset({"system"}), sites=None)



# a journey as a repair needs it: its id, its references, its state
Journey = tuple[uuid.UUID, list[str], JourneyState]


async def journey_state(conn: asyncpg.Connection, ref: str) -> Journey | None:
    row = await conn.fetchrow(
        "SELECT j.id, j.state, array(SELECT o.ref FROM journey_refs o WHERE o.journey_id = j.id ORDER BY"
        " o.ref) AS refs FROM journey_refs r JOIN journeys j ON j.id = r.journey_id WHERE r.ref = $1", ref)
    return None if row is None else (row["id"], list(row["refs"]), _state.decode(row["state"]))


async def _planned(conn: asyncpg.Connection, row: asyncpg.Record,
                   action: Action) -> tuple[Journey | None, RepairPlan]:
    """The item's journey and its plan, read in the caller's transaction (under the item's lock)."""
    journey = await journey_state(conn, row["ref"])
    record = record_of(row)
    # only a missing_here's corrective events carry the record's links (plans.corrective_events)
    links = record.links if record is not None and row["kind"] == "missing_here" else []
    links_elsewhere = await services.held_elsewhere(conn, links, row["site"]) if links else set()
    return journey, plan(row, action, journey[2] if journey else None, links_elsewhere=links_elsewhere)


async def _locked_item(conn: asyncpg.Connection, principal: Principal, drift_id: int) -> asyncpg.Record:
    row = await conn.fetchrow("SELECT * FROM drift_items WHERE id = $1 FOR UPDATE", drift_id)
    return visible(principal, "drift item", row, itemgetter("site"))


async def push_command(conn: asyncpg.Connection, *, command_id: uuid.UUID, rule: str, system: str, site: str,
                       ref: str, journey: Journey) -> None:
    """`record.push` of our state of `ref` to `system`, through the outbox (the relay paces and retries
    it)."""
    journey_id, refs, state = journey
    stage, fields = pushed_state(system, state)
    data = {"rule": rule, "ref": ref, "site": site, "stage": stage, "fields": fields}
    await conn.execute(
        "INSERT INTO commands (id, rule, system, command, journey_id, site, data, refs)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8) ON CONFLICT (id) DO NOTHING",
        command_id, rule, system, RECORD_PUSH, journey_id, site, _encode(data).decode(), refs)


async def _act(conn: asyncpg.Connection, resources: Resources, principal: Principal, row: asyncpg.Record,
               action: Action, reason: str | None, repair: RepairPlan,
               journey: Journey | None) -> ResolveResult:
    stored_reason, actor = scrubbed_reason(reason), acting_user(principal, resources)
    if action == "ignore":
        await conn.execute(
            "UPDATE drift_items SET status = 'ignored', action = 'ignore', reason = $2, acted_by = $3,"
            " resolved_at = now(), updated_at = now() WHERE id = $1", row["id"], stored_reason, actor)
        return ResolveResult(drift_id=row["id"], outcome="ignored", status="ignored", plan=repair)
    if action == "push_ours":
        assert journey is not None  # the plan said possible
        command_id = uuid.uuid4()
        await push_command(conn, command_id=command_id, rule="reconciliation", system=row["system"],
                           site=row["site"], ref=row["ref"], journey=journey)
        await conn.execute(
            "UPDATE drift_items SET status = 'repairing', action = 'push_ours', reason = $2, acted_by = $3,"
            " command_id = $4, last_check = $5::jsonb, updated_at = now() WHERE id = $1",
            row["id"], stored_reason, actor, command_id, _encode({"waiting_for": "command"}).decode())
        return ResolveResult(drift_id=row["id"], outcome="repairing", status="repairing", plan=repair,
                             command_id=command_id)
    events = corrective_events(row, journey[2] if journey else None)
    key = signing_key(resources.settings)
    for event in events:  # published before the commit: an item is `repairing` only once its events are out
        await own_events.publish(resources.js, key, event)
    ids = [e.id for e in events]
    await conn.execute(
        "UPDATE drift_items SET status = 'repairing', action = 'accept_source', reason = $2, acted_by = $3,"
        " last_check = $4::jsonb, updated_at = now() WHERE id = $1",
        row["id"], stored_reason, actor, _encode({"waiting_for": "events", "events": ids}).decode())
    return ResolveResult(drift_id=row["id"], outcome="repairing", status="repairing", plan=repair, events=ids)


async def resolve(resources: Resources, principal: Principal, drift_id: int, action: Action | None,
                  reason: str | None, *, dry_run: bool = False) -> ResolveResult:
    """Resolve one open item with `action` (None: its proposed action); `dry_run` only says what it would
    do."""
    async with resources.pool.acquire() as conn, conn.transaction():
        row = await _locked_item(conn, principal, drift_id)
        action = action or proposed_action(row)
        if action == "ignore" and not reason:
            raise ValidationException("ignore needs a reason")
        journey, repair = await _planned(conn, row, action)
        if dry_run:
            return ResolveResult(drift_id=drift_id, outcome="preview", status=row["status"], plan=repair)
        result = await _resolve_locked(conn, resources, principal, row, repair, journey, reason,
                                       selection=None)
    async with resources.pool.acquire() as conn:
        await live.publish_drift(resources.live, conn, [drift_id])
    return result


async def _resolve_locked(conn: asyncpg.Connection, resources: Resources, principal: Principal,
                          row: asyncpg.Record, repair: RepairPlan, journey: Journey | None,
                          reason: str | None, *, selection: str | None) -> ResolveResult:
    """Act on one locked item as planned from `journey`, with its audit row."""
    action = repair.action
    if row["status"] != "open":
        raise ConflictException(f"this drift item is {row['status']}, not open")
    if not repair.possible:
        raise ConflictException(f"{action} is not possible here: {repair.note}")
    try:
        result = await _act(conn, resources, principal, row, action, reason, repair, journey)
    except NotPossible as exc:
        raise ConflictException(f"{action} is not possible here: {exc}") from exc
    details: dict[str, Any] = msgspec.to_builtins(result)
    if selection:
        details["selection"] = selection
    await audit.record(conn, principal, action="drift.resolve", target=f"drift:{row['id']}", reason=reason,
                       result=details)
    return result


async def _matching(conn: asyncpg.Connection, principal: Principal, wanted: DriftFilter,
                    action: Action | None, up_to: int | None, *,
                    lock: bool = False) -> list[tuple[asyncpg.Record, Journey | None, RepairPlan]]:
    """The oldest open items the filter matches, one more than a selection holds (a set grown past it since
    the preview shows as a change), each with its journey and plan; `lock`: held until the caller's
    transaction ends."""
    args: list[Any] = []
    where = services.drift_filters(args, sites=principal.scope(wanted.site), status="open",
                                   system=wanted.system, kind=wanted.kind)
    if up_to is not None:
        args.append(up_to)
        where.append(f"d.id <= ${len(args)}")
    rows = await conn.fetch(f"SELECT d.* FROM drift_items d WHERE {' AND '.join(where)} ORDER BY d.id"
                            f" LIMIT {BULK_RESOLVE_MAX + 1}{' FOR UPDATE' if lock else ''}", *args)
    found = []
    for row in rows:
        found.append((row, *await _planned(conn, row, action or proposed_action(row))))
    return found


async def _count_matching(conn: asyncpg.Connection, principal: Principal, wanted: DriftFilter) -> int:
    args: list[Any] = []
    where = services.drift_filters(args, sites=principal.scope(wanted.site), status="open",
                                   system=wanted.system, kind=wanted.kind)
    return await conn.fetchval(f"SELECT count(*) FROM drift_items d WHERE {' AND '.join(where)}", *args)


def _digest(plans: list[RepairPlan]) -> str:
    return hashlib.sha256(_encode([[p.drift_id, p.action] for p in plans])).hexdigest()[:32]


async def preview(resources: Resources, principal: Principal, wanted: DriftFilter,
                  action: Action | None) -> BulkPreview:
    """The oldest `BULK_RESOLVE_MAX` open items the filter matches with what resolving each would change;
    `selection` names the possible ones, `matched` counts every match."""
    async with resources.pool.acquire() as conn:
        plans = [p for *_, p in await _matching(conn, principal, wanted, action, None)][:BULK_RESOLVE_MAX]
        matched = await _count_matching(conn, principal, wanted)
    acting = [p for p in plans if p.possible]
    selection = encode_cursor(wanted.system or "", wanted.site or "", wanted.kind or "", action or "",
                              max((p.drift_id for p in plans), default=0), len(acting), _digest(acting))
    return BulkPreview(matched=matched, acting=len(acting), selection=selection, plans=plans)


async def bulk_resolve(resources: Resources, principal: Principal, selection: str,
                       reason: str | None) -> BulkResolveResult:
    """Act on exactly the items the preview showed as possible, or on none (409) if that set changed since."""
    system, site, kind, action, up_to, count, digest = decode_cursor(selection, str, str, str,
                                                                     str, int, int, str)
    wanted = DriftFilter(system=system or None, site=site or None, kind=kind or None)
    chosen: Action | None = action or None
    if chosen == "ignore" and not reason:
        raise ValidationException("ignore needs a reason")
    # one transaction holding every item: all are acted on, or none (an item changed meanwhile is a 409)
    async with resources.pool.acquire() as conn, conn.transaction():
        matched = await _matching(conn, principal, wanted, chosen, up_to, lock=True)
        acting = [(row, journey, p) for row, journey, p in matched if p.possible]
        if len(acting) != count or _digest([p for *_, p in acting]) != digest:
            raise ConflictException(f"the items to act on changed since the preview ({len(acting)} now, not"
                                    f" {count}); preview again")
        # each item planned once, from the journey read under the lock
        results = [await _resolve_locked(conn, resources, principal, row, p, journey, reason,
                                         selection=selection) for row, journey, p in acting]
    async with resources.pool.acquire() as conn:
        await live.publish_drift(resources.live, conn, [r.drift_id for r in results])
    return BulkResolveResult(acted=len(results), selection=selection, results=results)
