"""Verifying repairs: a new read of the record decides whether a `repairing` item is resolved or open again.

An accept_source is checked once its corrective events are applied, a push_ours once its command is
answered `ok` (a command that fails reopens the item with the reason). The read compares that one
record with the journey again: the drift gone, the item is `resolved`; otherwise it is `open` with
`last_check` saying what was found.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec

from backend.live.bus import LiveBus
from backend.reconciliation import live
from backend.reconciliation.runs import assess
from backend.reconciliation.snapshot_client import SnapshotClient, Unreachable

log = logging.getLogger(__name__)
_encode = msgspec.json.encode
_BATCH = 200


async def _ready(conn: asyncpg.Connection, timeout: timedelta) -> tuple[list[asyncpg.Record], list[int]]:
    """Repairing items ready for their read, and those reopened because their repair can no longer succeed."""
    # a push still held or in flight is not looked at: hundreds held through an outage never crowd out the
    # rest
    rows = await conn.fetch(
        "SELECT d.*, c.status AS command_status, c.last_error AS command_error FROM drift_items d"
        " LEFT JOIN commands c ON c.id = d.command_id WHERE d.status = 'repairing'"
        " AND (d.action <> 'push_ours' OR c.status IS NULL OR c.status IN ('ok', 'failed'))"
        # those whose system could not be read last time after the others: they never crowd them out
        " ORDER BY d.last_check->>'tried_at' NULLS FIRST, d.id LIMIT $1", _BATCH)
    ready, reopened = [], []
    now = datetime.now(UTC)
    for row in rows:
        waiting = msgspec.json.decode(row["last_check"]) if row["last_check"] else {}
        note = None
        if row["action"] == "push_ours":
            if row["command_status"] == "ok":
                ready.append(row)
            elif row["command_status"] in (None, "failed"):
                note = f"the push failed: {row['command_error'] or 'the command is gone'}"
        else:
            ids = waiting.get("events", [])
            applied = await conn.fetchval("SELECT count(*) FROM event_inbox WHERE source = '/switchboard'"
                                          " AND id = ANY($1::text[])", ids)
            if applied == len(ids):
                ready.append(row)
            elif row["updated_at"] + timeout < now:
                note = f"the corrective events were not applied within {timeout.total_seconds():g}s"
        if note is not None and await _settle(conn, row["id"], "open",
                                              {"found": "not verified", "note": note}):
            reopened.append(row["id"])
    return ready, reopened


async def _unread(conn: asyncpg.Connection, rows: list[asyncpg.Record], timeout: timedelta,
                  why: str) -> list[int]:
    """Items whose system could not be read for their check: open again once their first check failed longer
    than `timeout` ago (a system never read again must not leave them repairing for ever), else tried again
    after the others. The ids reopened."""
    now, reopened = datetime.now(UTC), []
    for row in rows:
        first = (msgspec.json.decode(row["last_check"]) if row["last_check"] else {}).get("first_tried_at")
        if first is not None and datetime.fromisoformat(first) + timeout < now and await _settle(
                conn, row["id"], "open", {"found": "not verified",
                                          "note": f"not checked within {timeout.total_seconds():g}s: {why}"}):
            reopened.append(row["id"])
    await conn.execute(
        # the first try kept, the last one's time replaced
        "UPDATE drift_items SET last_check = jsonb_build_object('first_tried_at', now())"
        " || coalesce(last_check, '{}') || jsonb_build_object('tried_at', now())"
        " WHERE id = ANY($1::bigint[]) AND status = 'repairing'", [r["id"] for r in rows])
    return reopened


async def _settle(conn: asyncpg.Connection, drift_id: int, status: str, check: dict[str, Any]) -> bool:
    """Resolve or reopen one item still `repairing` (another replica may have settled it first)."""
    check = {**check, "at": datetime.now(UTC)}
    done = await conn.fetchval(
        "UPDATE drift_items SET status = $2, last_check = $3::jsonb, updated_at = now(),"
        " resolved_at = CASE WHEN $2 = 'resolved' THEN now() END WHERE id = $1 AND status = 'repairing'"
        " RETURNING id",
        drift_id, status, _encode(check).decode())
    return done is not None


async def verify_repairs(pool: asyncpg.Pool, bus: LiveBus, client: SnapshotClient, *, stale_after: timedelta,
                         timeout: timedelta) -> list[int]:
    """One round over the repairing items; the ids it settled."""
    settled: list[int] = []
    async with pool.acquire() as conn:
        ready, reopened = await _ready(conn, timeout)
        settled += reopened
        groups: dict[tuple[str, str], list[asyncpg.Record]] = defaultdict(list)
        for row in ready:
            groups[(row["system"], row["site"])].append(row)
        for (system, site), rows in groups.items():
            refs = sorted({r["ref"] for r in rows})
            skipped: dict[str, str] = {}
            try:
                records = await client.refs(system, site, datetime.now(UTC).date(), refs, skipped)
            except Unreachable as exc:
                log.info("repairs of %s at %s wait: %s", system, site, exc)
                settled += await _unread(conn, rows, timeout, f"{system} could not be read: {exc}")
                continue
            absent = [r for r in refs if r not in records and r not in skipped]
            findings = await assess(conn, system, records.values(), absent, stale_after=stale_after)
            still = {f.dedupe_key(system): f for f in findings}
            for row in rows:
                finding = still.get(row["dedupe_key"])
                record = records.get(row["ref"])
                check: dict[str, Any]
                if row["ref"] in skipped:  # read, but not as Switchboard may keep it: for a person to look at
                    check = {"found": "not verified",
                             "note": f"the system's record cannot be kept: {skipped[row['ref']]}"}
                    status = "open"
                elif finding is None:
                    check = {"found": "in order", "theirs": msgspec.to_builtins(record) if record else None}
                    status = "resolved"
                else:
                    check = {"found": "still differs", "ours": finding.ours, "theirs": finding.theirs,
                             "note": f"the drift remains after {row['action']}"}
                    status = "open"
                if await _settle(conn, row["id"], status, check):
                    settled.append(row["id"])
        if settled:
            await live.publish_drift(bus, conn, settled)
    return settled
