"""Recording and reading failures (CONTRACT section 4)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal
from uuid import UUID

import asyncpg
import msgspec

from backend.failures.schemas import Failure, FailureImpact
from backend.ingest.validate import Rejected
from backend.live.bus import Announcements
from switchboard.privacy import excerpt, scrub_identifier

_READ_AT_ONCE = 500  # failures per query when a change touches many


async def failure_changed(conn: asyncpg.Connection, announce: Announcements,
                          failure_ids: Iterable[int]) -> None:
    """The one place every failure change passes: opened, retrying, resolved, discarded.

    Reads the failures as the caller's transaction leaves them, for the live `failures` topic to hear of
    once that transaction commits (`LiveBus.after_commit`), and never if it rolls back.
    """
    ids = sorted(set(failure_ids))
    for start in range(0, len(ids), _READ_AT_ONCE):
        for failure in await get_failures(conn, ids[start:start + _READ_AT_ONCE]):
            announce("failures", failure.site, failure.id, failure)


def _storable(value: Any) -> Any:
    """Postgres text and jsonb cannot hold U+0000: a failure keeps it as U+FFFD, so it can always be
    recorded."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_storable(v) for v in value)
    return value


async def record_inbound(conn: asyncpg.Connection, announce: Announcements,
                         rejected: Sequence[tuple[Rejected, str]]) -> None:
    """Store rejected inbound messages; `dedupe_key` makes a redelivered message the same failure. The same
    failure again after it was resolved or discarded (an event sent again that fails again) opens it again,
    as it failed this time (its kind decides whether it may be retried): never silently nothing.

    The columns a failure is found by are checked like its payload: one that looks personal is dropped whole.
    """
    # one row per key: the same message or event twice in a batch (redelivered, or resent past JetStream's
    # duplicate window) is one failure, and one statement may not update a row twice
    once: dict[str, Rejected] = {}
    for failure, key in rejected:
        once.setdefault(key, failure)
    if not once:
        return
    columns = list(zip(*[
        _storable((key, r.kind, r.system,
                   *map(scrub_identifier, (r.site, r.subject, r.event_source, r.event_id,
                                                                  r.event_type)),
                   excerpt(r.reason, 1000), msgspec.json.encode(_storable(r.payload)).decode(),
                   None if r.sender_sites is None else msgspec.json.encode(r.sender_sites).decode()))
        for key, r in once.items()
    ], strict=True))
    opened = await conn.fetch(
        """
        INSERT INTO failures (dedupe_key, kind, system, site, subject, event_source, event_id, event_type,
                              reason, payload, sender_sites)
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::text[], $8::text[], $9::text[], $10::jsonb[], $11::jsonb[])
        ON CONFLICT (dedupe_key) DO UPDATE SET status = 'open', attempts = failures.attempts + 1,
            last_at = now(), kind = EXCLUDED.kind, reason = EXCLUDED.reason, payload = EXCLUDED.payload,
            system = EXCLUDED.system, site = EXCLUDED.site, subject = EXCLUDED.subject,
            event_source = EXCLUDED.event_source, event_id = EXCLUDED.event_id,
            event_type = EXCLUDED.event_type, sender_sites = EXCLUDED.sender_sites
        WHERE failures.status IN ('resolved', 'discarded')
        RETURNING id
        """,
        *map(list, columns),
    )
    await failure_changed(conn, announce, [r["id"] for r in opened])


class CommandFailure(msgspec.Struct, kw_only=True):
    command_id: UUID
    kind: Literal["command_failed", "command_timeout"]
    reason: str
    system: str
    site: str
    journey_id: UUID
    attempts: int


async def record_command_failures(conn: asyncpg.Connection, announce: Announcements,
                                  failures: Sequence[CommandFailure]) -> None:
    """A command past its last attempt; one failure per command, reopened if a retry of it fails again."""
    if not failures:
        return
    rows = await conn.fetch(
        """
        INSERT INTO failures (dedupe_key, kind, system, site, command_id, journey_id, reason, attempts,
            payload)
        SELECT 'command:' || c.id, f.kind, c.system, c.site, c.id::text, c.journey_id, f.reason, f.attempts,
               jsonb_build_object('id', c.id, 'system', c.system, 'command', c.command, 'journey_id',
                   c.journey_id,
                                  'refs', to_jsonb(c.refs), 'site', c.site, 'data', c.data, 'attempt',
                                      c.attempts,
                                  'created_at', c.created_at)
        FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[]) AS f(command_id, kind, reason, attempts)
        JOIN commands c ON c.id = f.command_id
        ON CONFLICT (dedupe_key) DO UPDATE SET kind = EXCLUDED.kind, status = 'open', reason =
            EXCLUDED.reason,
            attempts = failures.attempts + 1, last_at = now()
        RETURNING id
        """,
        [f.command_id for f in failures], [f.kind for f in failures], [f.reason[:1000] for f in failures],
        [f.attempts for f in failures],
    )
    await failure_changed(conn, announce, [r["id"] for r in rows])


# The journey a failure concerns: the command's, or the one its event's subject belongs to; at the failure's
# site only (those who may read a failure may not read a journey elsewhere that shares its reference). A
# failure of no site is read only by readers of every site.
_IMPACT_JOIN = """
LEFT JOIN LATERAL (
    SELECT j.id, j.stage, coalesce(j.waiting_at, j.arrived_at) AS waiting_since,
           (j.state -> 'slot_start' ->> 1)::timestamptz AS slot_start
    FROM journeys j
    WHERE j.id = coalesce((SELECT a.new_id FROM journey_aliases a WHERE a.old_id = f.journey_id),
        f.journey_id,
                          (SELECT r.journey_id FROM journey_refs r WHERE r.ref = f.subject))
      AND (f.site IS NULL OR j.site = f.site)
) j ON true
"""
# Customers in the building first (longest waiting first), then upcoming appointments (soonest first).
_IMPACT_ORDER = """
CASE WHEN j.stage IN ('arrived', 'waiting', 'called') THEN 0
     WHEN j.stage = 'booked' AND j.slot_start > now() - interval '1 hour' THEN 1 ELSE 2 END,
j.waiting_since ASC NULLS LAST, j.slot_start ASC NULLS LAST, f.last_at DESC, f.id DESC
"""


def _filters(args: list[Any], *, sites: list[str] | None, status: str | None, kind: str | None,
             system: str | None) -> list[str]:
    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    where = []
    if sites is not None:
        where.append(f"f.site = ANY({arg(sites)}::text[])")
    for column, value in (("status", status), ("kind", kind), ("system", system)):
        if value is not None:
            where.append(f"f.{column} = {arg(value)}")
    return where


_DECODED = frozenset({"payload", "impact", "sender_sites"})


def _failure(row: asyncpg.Record) -> Failure:
    impact = None
    if row["impact_journey"] is not None:
        impact = FailureImpact(journey_id=row["impact_journey"], stage=row["impact_stage"],
                               waiting_since=row["waiting_since"], slot_start=row["slot_start"])
    sender_sites = row["sender_sites"]
    return Failure(**{f: row[f] for f in Failure.__struct_fields__ if f not in _DECODED},
                   payload=msgspec.json.decode(row["payload"]), impact=impact,
                   sender_sites=None if sender_sites is None else msgspec.json.decode(sender_sites))


async def list_failures(conn: asyncpg.Connection, *, sites: list[str] | None, status: str | None,
                        kind: str | None, system: str | None, limit: int, cursor: int | None,
                        order: str = "time") -> list[Failure]:
    """Newest first, or by customer impact; a caller scoped to some sites sees only failures known to belong
    to them.

    `cursor` is the last id seen when ordered by time, the offset when ordered by impact.
    """
    args: list[Any] = []
    where = _filters(args, sites=sites, status=status, kind=kind, system=system)
    if order == "time" and cursor is not None:
        args.append(cursor)
        where.append(f"f.id < ${len(args)}")
    args.append(limit)
    page = f"LIMIT ${len(args)}"
    if order == "impact":
        args.append(cursor or 0)
        page += f" OFFSET ${len(args)}"
    rows = await conn.fetch(
        f"SELECT f.*, j.id AS impact_journey, j.stage AS impact_stage, j.waiting_since, j.slot_start"
        f" FROM failures f {_IMPACT_JOIN} {'WHERE ' + ' AND '.join(where) if where else ''}"
        f" ORDER BY {_IMPACT_ORDER if order == 'impact' else 'f.id DESC'} {page}",
        *args,
    )
    return [_failure(r) for r in rows]


async def get_failure(conn: asyncpg.Connection, failure_id: int) -> Failure | None:
    found = await get_failures(conn, [failure_id])
    return found[0] if found else None


async def matching(conn: asyncpg.Connection, *, sites: list[str] | None, kind: str | None, system: str | None,
                   limit: int, leave_out: Sequence[str]) -> tuple[list[int], int, int]:
    """Ids of the oldest `limit` open failures a bulk retry's filter matches, leaving out the kinds
    `leave_out`; how many match in all, those left out included; and how many were left out."""
    args: list[Any] = []
    where = _filters(args, sites=sites, status="open", kind=kind, system=system)
    args.append(list(leave_out))
    left_out = f"f.kind = ANY(${len(args)}::text[])"
    counted = await conn.fetchrow(f"SELECT count(*) AS matched, count(*) FILTER (WHERE {left_out})"
                                  f" AS left_out FROM failures f WHERE {' AND '.join(where)}", *args)
    args.append(limit)
    rows = await conn.fetch(f"SELECT f.id FROM failures f WHERE {' AND '.join(where)} AND NOT {left_out}"
                            f" ORDER BY f.id LIMIT ${len(args)}", *args)
    return [r["id"] for r in rows], counted["matched"], counted["left_out"]


async def get_failures(conn: asyncpg.Connection, failure_ids: Sequence[int]) -> list[Failure]:
    rows = await conn.fetch(
        f"SELECT f.*, j.id AS impact_journey, j.stage AS impact_stage, j.waiting_since, j.slot_start"
        f" FROM failures f {_IMPACT_JOIN} WHERE f.id = ANY($1::bigint[]) ORDER BY f.id", list(failure_ids))
    return [_failure(r) for r in rows]
