"""Recording and reading failures (CONTRACT section 4)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import msgspec

from backend import live
from backend.failures.schemas import Failure
from backend.ingest.validate import Rejected


async def record_inbound(conn: asyncpg.Connection, rejected: Sequence[tuple[Rejected, str]]) -> None:
    """Store rejected inbound messages; `dedupe_key` makes a redelivered message the same failure."""
    if not rejected:
        return
    await conn.executemany(
        """
        INSERT INTO failures (dedupe_key, kind, system, site, subject, event_source, event_id, event_type,
                              reason, payload)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb)
        ON CONFLICT (dedupe_key) DO NOTHING
        """,
        [
            (key, r.kind, r.system, r.site, r.subject, r.event_source, r.event_id, r.event_type, r.reason[:1000],
             msgspec.json.encode(r.payload).decode())
            for r, key in rejected
        ],
    )
    # published before the caller commits: a batch rolled back is recorded and published again
    for failure in await _failures_by_key(conn, [key for _, key in rejected]):
        await live.publish("failures", failure.site, failure.id, failure)


async def _failures_by_key(conn: asyncpg.Connection, keys: list[str]) -> list[Failure]:
    rows = await conn.fetch("SELECT * FROM failures WHERE dedupe_key = ANY($1::text[])", keys)
    return [Failure(**{f: r[f] for f in Failure.__struct_fields__ if f != "payload"},
                    payload=msgspec.json.decode(r["payload"])) for r in rows]


async def list_failures(conn: asyncpg.Connection, *, sites: list[str] | None, status: str | None, kind: str | None,
                        system: str | None, limit: int, cursor: int | None) -> list[Failure]:
    """Newest first; a caller scoped to some sites sees only failures known to belong to them."""
    rows = await conn.fetch(
        """
        SELECT * FROM failures
        WHERE ($1::text[] IS NULL OR site = ANY($1)) AND ($2::text IS NULL OR status = $2)
          AND ($3::text IS NULL OR kind = $3) AND ($4::text IS NULL OR system = $4) AND ($5::bigint IS NULL OR id < $5)
        ORDER BY id DESC LIMIT $6
        """,
        sites, status, kind, system, cursor, limit,
    )
    return [Failure(**{f: r[f] for f in Failure.__struct_fields__ if f != "payload"},
                    payload=msgspec.json.decode(r["payload"])) for r in rows]
