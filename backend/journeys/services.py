"""Reading journeys: keyset-paged lists, found by the start of a reference or ticket number, and one
journey with its timeline, commands, failures and drift."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import msgspec

from backend.commands.services import list_commands
from backend.failures.services import get_failures
from backend.journeys.merge import JourneyState
from backend.journeys.schemas import Journey, JourneyDetail, JourneyPage, TimelineEntry
from backend.journeys.views import journey_view
from backend.paging import decode_cursor, encode_cursor
from backend.reconciliation.services import get_drift

_state = msgspec.json.Decoder(JourneyState)
# A journey's page shows at most this many of its commands, failures and drift items (newest first).
DETAIL_LIMIT = 200
# and at most this many of its events, the newest (`earlier_events` says when there are more)
TIMELINE_LIMIT = 1000
# Prefix ranges over the text_pattern_ops indexes of sql/014: each reads only the entries of its prefix.
_FOUND_BY_PREFIX = """(
    SELECT r.journey_id FROM journey_refs r WHERE lower(r.ref) ~>=~ {lo} AND lower(r.ref) ~<~ {hi}
    UNION SELECT r.journey_id FROM journey_refs r
        WHERE lower(substr(r.ref, strpos(r.ref, ':') + 1)) ~>=~ {lo}
          AND lower(substr(r.ref, strpos(r.ref, ':') + 1)) ~<~ {hi}
    UNION SELECT t.id FROM journeys t
        WHERE lower(t.state #>> '{{ticket,1,ticket}}') ~>=~ {lo}
          AND lower(t.state #>> '{{ticket,1,ticket}}') ~<~ {hi}
)"""
_COLUMNS = ("j.id, j.site, j.stage, j.state, j.created_at, j.updated_at,"
            " array(SELECT r.ref FROM journey_refs r WHERE r.journey_id = j.id ORDER BY r.ref) AS refs")


def to_journey(row: asyncpg.Record, cls: type[Journey] = Journey, **extra: Any) -> Journey:
    return journey_view(_state.decode(row["state"]), id=row["id"], site=row["site"], stage=row["stage"],
                        refs=list(row["refs"]), created_at=row["created_at"], updated_at=row["updated_at"],
                        cls=cls, **extra)


def prefix_range(prefix: str) -> tuple[str, str]:
    """The byte-ordered range [low, high) holding exactly the strings that start with `prefix` (lower-cased):
    the last character stepped up by one (UTF-8 byte order is code point order), dropping characters that
    cannot step."""
    low = high = prefix.lower()
    while high:
        last = ord(high[-1]) + 1
        if last == 0xD800:  # surrogates are not characters
            last = 0xE000
        if last <= 0x10FFFF:
            return low, high[:-1] + chr(last)
        high = high[:-1]
    return low, "\U0010ffff" * 2  # a prefix of only U+10FFFF: everything from it on


async def list_journeys(conn: asyncpg.Connection, *, sites: list[str] | None, stage: str | None,
                        ref: str | None, limit: int, cursor: str | None, q: str | None = None,
                        since: datetime | None = None, until: datetime | None = None) -> JourneyPage:
    """Newest first. `q` finds the start of any reference (`queue:T-00`, or its id alone `T-00`) or ticket
    number; `since`/`until` bound when the journey began."""
    where, args = [], []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if sites is not None:
        where.append(f"j.site = ANY({arg(sites)}::text[])")
    if stage:
        where.append(f"j.stage = {arg(stage)}")
    if ref:
        where.append(f"j.id = (SELECT journey_id FROM journey_refs WHERE ref = {arg(ref)})")
    if q:
        low, high = prefix_range(q)
        where.append(f"j.id IN {_FOUND_BY_PREFIX.format(lo=arg(low), hi=arg(high))}")
    if since:
        where.append(f"j.created_at >= {arg(since)}")
    if until:
        where.append(f"j.created_at < {arg(until)}")
    if cursor:
        created_at, last_id = decode_cursor(cursor, datetime, UUID)
        where.append(f"(j.created_at, j.id) < ({arg(created_at)}, {arg(last_id)})")
    sql = (f"SELECT {_COLUMNS} FROM journeys j {'WHERE ' + ' AND '.join(where) if where else ''}"
           f" ORDER BY j.created_at DESC, j.id DESC LIMIT {arg(limit + 1)}")
    rows = await conn.fetch(sql, *args)
    items = [to_journey(r) for r in rows[:limit]]
    next_cursor = encode_cursor(items[-1].created_at, items[-1].id) if len(rows) > limit else None
    return JourneyPage(items=items, next_cursor=next_cursor)


async def get_journey(conn: asyncpg.Connection, journey_id: UUID,
                      sites: list[str] | None = None) -> JourneyDetail | None:
    """One journey with its detail (`journey_detail`)."""
    row = await find_journey(conn, journey_id)
    return None if row is None else await journey_detail(conn, row, sites)


async def find_journey(conn: asyncpg.Connection, journey_id: UUID) -> asyncpg.Record | None:
    """One journey's row, without its detail: enough to decide who may see it before reading the rest. An
    id that a merge absorbed answers with the journey it merged into."""
    return await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM journeys j WHERE j.id = coalesce("
        " (SELECT new_id FROM journey_aliases WHERE old_id = $1), $1)", journey_id)


async def journey_detail(conn: asyncpg.Connection, row: asyncpg.Record,
                         sites: list[str] | None) -> JourneyDetail:
    """A journey (`find_journey`'s row) with its timeline, commands, failures and drift; its commands,
    failures and drift are those of `sites` only (None: every site): a failure another site's connector
    caused about this journey's reference is that site's."""
    # the newest events, oldest first: a journey's events are not bounded, its page is
    newest = await conn.fetch(
        "SELECT source, id, type, time, applied_at, scope FROM events WHERE journey_id = $1"
        " ORDER BY time DESC, source DESC, id DESC LIMIT $2",
        row["id"], TIMELINE_LIMIT + 1)
    timeline = newest[:TIMELINE_LIMIT][::-1]
    commands, _ = await list_commands(conn, sites=sites, system=None, status=None, journey=row["id"],
                                      limit=DETAIL_LIMIT, cursor=None)
    refs = list(row["refs"])
    failure_ids = await conn.fetch(
        "SELECT id FROM failures WHERE (journey_id = ANY($1::uuid[]) OR subject = ANY($2::text[])"
        " OR command_id = ANY($3::text[])) AND ($5::text[] IS NULL OR site = ANY($5::text[]))"
        " ORDER BY id DESC LIMIT $4",
        await _ids_of(conn, row["id"]), refs, [str(c.id) for c in commands], DETAIL_LIMIT, sites)
    drift_ids = await conn.fetch(
        "SELECT id FROM drift_items WHERE (journey_id = ANY($1::uuid[]) OR ref = ANY($2::text[]))"
        " AND ($4::text[] IS NULL OR site = ANY($4::text[])) ORDER BY id DESC LIMIT $3",
        await _ids_of(conn, row["id"]), refs, DETAIL_LIMIT, sites)
    return to_journey(row, JourneyDetail, timeline=[TimelineEntry(**dict(t)) for t in timeline],  # type: ignore[return-value]
                      earlier_events=len(newest) > TIMELINE_LIMIT,
                      commands=commands,
                      failures=await get_failures(conn, [r["id"] for r in failure_ids]),
                      drift=await get_drift(conn, [r["id"] for r in drift_ids]))


async def _ids_of(conn: asyncpg.Connection, journey_id: UUID) -> list[UUID]:
    """The journey's id and those a merge folded into it."""
    folded = await conn.fetch("SELECT old_id FROM journey_aliases WHERE new_id = $1", journey_id)
    return [journey_id, *(r["old_id"] for r in folded)]
