"""Fallbacks (CONTRACT section 6): start, end, read, and their live topic.

Ending a fallback sets it `replaying`; the reconciliation scheduler pushes its ledger to the system
and sets it `ended` (and calls `announce_fallback` so the board hears of it).
"""

from __future__ import annotations

from operator import itemgetter

import asyncpg
import msgspec
from litestar.exceptions import ClientException, PermissionDeniedException

from backend.audit import services as audit
from backend.auth import Principal
from backend.errors import ConflictException
from backend.fallbacks.schemas import (
    STEPS,
    Fallback,
    FallbackDetail,
    LedgerEntry,
    ReplaySummary,
    StartFallback,
)
from backend.live.bus import Announcements
from backend.privacy import acting_user as manual_user  # the name fallbacks.actions uses
from backend.privacy import scrubbed_reason
from backend.resources import Resources
from backend.visibility import visible
from switchboard.events import RESERVED_SYSTEMS, SEED_SYSTEMS

# how long an ended fallback stays on the live board
RECENT_HOURS = 12
FALLBACKS_IN_SNAPSHOT = 200



_COLUMNS = "f.*, (SELECT count(*) FROM fallback_ledger l WHERE l.fallback_id = f.id) AS ledger_size"


def _fallback(row: asyncpg.Record) -> Fallback:
    return Fallback(**{k: row[k] for k in Fallback.__struct_fields__ if k not in ("replay", "steps")},
                    replay=None if row["replay"] is None
                    else msgspec.json.decode(row["replay"], type=ReplaySummary),
                    steps=list(STEPS.get(row["system"], ())))


async def list_fallbacks(conn: asyncpg.Connection, *, sites: list[str] | None, status: str | None, limit: int,
                         cursor: int | None) -> list[Fallback]:
    """Newest first; `cursor` is the last id seen."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM fallbacks f WHERE ($1::text[] IS NULL OR f.site = ANY($1))"
        " AND ($2::text IS NULL OR f.status = $2) AND ($3::bigint IS NULL OR f.id < $3) ORDER BY f.id DESC"
        " LIMIT $4",
        sites, status, cursor, limit)
    return [_fallback(r) for r in rows]


async def find_fallback(conn: asyncpg.Connection, fallback_id: int) -> Fallback | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM fallbacks f WHERE f.id = $1", fallback_id)
    return None if row is None else _fallback(row)


async def with_ledger(conn: asyncpg.Connection, fallback: Fallback) -> FallbackDetail:
    """The fallback with its whole ledger."""
    return FallbackDetail(**msgspec.structs.asdict(fallback),
                          ledger=await ledger_page(conn, fallback.id, after=0, limit=None))


async def ledger_page(conn: asyncpg.Connection, fallback_id: int, *, after: int,
                      limit: int | None) -> list[LedgerEntry]:
    """A fallback's steps in the order they were taken, from the one after `after` (a `seq`)."""
    rows = await conn.fetch("SELECT * FROM fallback_ledger WHERE fallback_id = $1 AND seq > $2"
                            " ORDER BY seq LIMIT $3", fallback_id, after, limit)
    return [LedgerEntry(**{k: r[k] for k in LedgerEntry.__struct_fields__ if k != "data"},
                        data=msgspec.json.decode(r["data"])) for r in rows]


async def snapshot(conn: asyncpg.Connection, sites: list[str] | None) -> list[Fallback]:
    """The live topic's snapshot: fallbacks active or replaying, and those ended in the last hours."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM fallbacks f WHERE ($1::text[] IS NULL OR f.site = ANY($1))"
        f" AND (f.status <> 'ended' OR f.ended_at > now() - interval '{RECENT_HOURS} hours')"
        " ORDER BY f.id DESC LIMIT $2", sites, FALLBACKS_IN_SNAPSHOT)
    return [_fallback(r) for r in rows]


async def announce_fallback(conn: asyncpg.Connection, announce: Announcements, fallback_id: int) -> None:
    """Tell the live `fallbacks` topic how a fallback stands (after its start, an action, its end, its
    replay), as the transaction of `announce` leaves it, once that commits."""
    fallback = await find_fallback(conn, fallback_id)
    if fallback is not None:
        announce("fallbacks", fallback.site, fallback.id, fallback)


async def locked(conn: asyncpg.Connection, principal: Principal, fallback_id: int) -> asyncpg.Record:
    """The fallback's row, locked for the caller's transaction, if the caller may act on its site."""
    row = await conn.fetchrow("SELECT * FROM fallbacks WHERE id = $1 FOR UPDATE", fallback_id)
    return visible(principal, "fallback", row, itemgetter("site"))


def fallback_systems(resources: Resources) -> frozenset[str]:
    """The systems staff can stand in for: the registered ones, not Switchboard's own sources."""
    return (SEED_SYSTEMS | frozenset(resources.settings.ingest.extra_systems)) - RESERVED_SYSTEMS


async def start(resources: Resources, principal: Principal, wanted: StartFallback) -> Fallback:
    if not principal.may_see(wanted.site):
        raise PermissionDeniedException(f"site {wanted.site!r} is outside your sites")
    if wanted.system not in fallback_systems(resources):
        raise ClientException(f"system {wanted.system!r} is not a registered system")
    actor = manual_user(principal, resources)
    async with resources.pool.acquire() as conn:
        try:
            async with resources.live.after_commit(conn) as announce:
                fallback_id = await conn.fetchval(
                    "INSERT INTO fallbacks (site, system, reason, started_by) VALUES ($1, $2, $3, $4)"
                    " RETURNING id",
                    wanted.site, wanted.system, scrubbed_reason(wanted.reason), actor)
                await audit.record(conn, principal, action="fallback.start", target=f"fallback:{fallback_id}",
                                   reason=wanted.reason,
                                   result={"site": wanted.site, "system": wanted.system, "status": "active"})
                await announce_fallback(conn, announce, fallback_id)
        except asyncpg.UniqueViolationError:
            raise ConflictException(
                f"a fallback for {wanted.system} at {wanted.site} is already active") from None
        fallback = await find_fallback(conn, fallback_id)
    assert fallback is not None
    return fallback


async def end(resources: Resources, principal: Principal, fallback_id: int, reason: str | None) -> Fallback:
    """Staff are done by hand: the fallback becomes `replaying` and its ledger is pushed to the system."""
    async with resources.pool.acquire() as conn:
        async with resources.live.after_commit(conn) as announce:
            row = await locked(conn, principal, fallback_id)
            if row["status"] != "active":
                raise ConflictException(f"this fallback is {row['status']}, not active")
            await conn.execute(
                "UPDATE fallbacks SET status = 'replaying', ended_by = $2, ended_at = now(), end_reason = $3"
                " WHERE id = $1", fallback_id, manual_user(principal, resources), scrubbed_reason(reason))
            ledger_size = await conn.fetchval("SELECT count(*) FROM fallback_ledger WHERE fallback_id = $1",
                                              fallback_id)
            await audit.record(conn, principal, action="fallback.end", target=f"fallback:{fallback_id}",
                               reason=reason, result={"status": "replaying", "ledger_size": ledger_size})
            await announce_fallback(conn, announce, fallback_id)
        fallback = await find_fallback(conn, fallback_id)
    assert fallback is not None
    return fallback
