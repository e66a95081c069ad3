"""The audit log: append-only (a trigger refuses UPDATE, DELETE and TRUNCATE for every role)."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from backend.audit.schemas import AuditEntry
from backend.auth import Principal
from backend.privacy import audit_actor, scrubbed_reason

CSV_COLUMNS = ("id", "at", "actor", "roles", "action", "target", "site", "reason", "result")
_CSV_BATCH = 500
# a spreadsheet runs a cell that starts with one of these as a formula
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class AuditFilter(msgspec.Struct, frozen=True, kw_only=True):
    actor: str | None = None
    action: str | None = None
    sites: list[str] | None = None  # None: every site, and actions of no one site
    since: datetime | None = None
    until: datetime | None = None


async def record(conn: asyncpg.Connection, principal: Principal, *, action: str, target: str,
                 reason: str | None, result: Any) -> None:
    """One action by one person, written in the transaction of the action itself.

    The reason is free text typed by staff: it is scrubbed like every stored reason, and an actor whose `sub`
    looks personal (an e-mail, a number, `First_Last`) is stored as its pseudonym (`backend.privacy`).
    The site comes from the target's row (a trigger, sql/014)."""
    await conn.execute(
        "INSERT INTO audit_log (actor, roles, action, target, reason, result) VALUES ($1, $2, $3, $4, $5,"
        " $6::jsonb)",
        audit_actor(principal), sorted(principal.roles), action, target, scrubbed_reason(reason),
        msgspec.json.encode(result).decode())


async def list_entries(conn: asyncpg.Connection, wanted: AuditFilter, *, limit: int,
                       cursor: int | None) -> list[AuditEntry]:
    """Newest first, from the entry before `cursor`."""
    rows = await conn.fetch(
        "SELECT * FROM audit_log WHERE ($1::text IS NULL OR actor = $1) AND ($2::text IS NULL OR action = $2)"
        " AND ($3::text[] IS NULL OR site = ANY($3)) AND ($4::timestamptz IS NULL OR at >= $4)"
        " AND ($5::timestamptz IS NULL OR at < $5) AND ($6::bigint IS NULL OR id < $6) ORDER BY id DESC"
        " LIMIT $7",
        wanted.actor, wanted.action, wanted.sites, wanted.since, wanted.until, cursor, limit)
    return [AuditEntry(id=r["id"], at=r["at"], actor=r["actor"], roles=list(r["roles"]), action=r["action"],
                       target=r["target"], site=r["site"], reason=r["reason"],
                       result=msgspec.json.decode(r["result"])) for r in rows]


def _safe_cell(value: Any) -> str:
    text = value if isinstance(value, str) else "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _csv_line(values: list[Any]) -> str:
    out = io.StringIO()
    csv.writer(out).writerow([_safe_cell(v) for v in values])
    return out.getvalue()


async def csv_lines(pool: asyncpg.Pool, wanted: AuditFilter) -> AsyncIterator[str]:
    """Every matching entry as CSV, a batch at a time: memory stays flat whatever the log holds."""
    yield _csv_line(list(CSV_COLUMNS))
    cursor: int | None = None
    while True:
        async with pool.acquire() as conn:
            batch = await list_entries(conn, wanted, limit=_CSV_BATCH, cursor=cursor)
        for e in batch:
            yield _csv_line([e.id, e.at.isoformat(), e.actor, " ".join(e.roles), e.action, e.target, e.site,
                             e.reason, msgspec.json.encode(e.result).decode()])
        if len(batch) < _CSV_BATCH:
            return
        cursor = batch[-1].id
