"""One reconciliation run: read a system's snapshot for a site and day, compare, record the drift.

The same drift found again updates its open item (`dedupe_key`); an open item whose reference the run
checked and found in order is resolved by the run. Drift a person ignored is not raised again while
it stays the same. A record Switchboard cannot keep is skipped with its reason (logged), the others
compared.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec

from backend.reconciliation import services
from backend.reconciliation.compare import Finding, compare_absent, compare_record
from backend.reconciliation.schemas import Run
from backend.reconciliation.snapshot_client import SnapshotClient, Unreachable, skipped_summary
from switchboard.privacy import scrub
from switchboard.snapshots import SnapshotRecord

log = logging.getLogger(__name__)
_encode = msgspec.json.encode


def _jsonb(value: Any) -> str | None:
    return None if value is None else _encode(value).decode()


def _normal(value: Any) -> Any:
    return msgspec.json.decode(_encode(value))


def _decoded(value: str | None) -> Any:
    return None if value is None else msgspec.json.decode(value)


async def assess(conn: asyncpg.Connection, system: str, records: Iterable[SnapshotRecord],
                 absent: Iterable[str], *, stale_after: timedelta) -> list[Finding]:
    """The drift between these records and Switchboard, and for `absent`: references the system lacks."""
    records, absent = list(records), list(absent)
    held = await services.holdings_by_ref(conn, [r.ref for r in records] + absent)
    set_by = await services.setters(conn, system, held.values())
    now = datetime.now(UTC)
    found: list[Finding] = []
    for record in records:
        found += compare_record(system, record, held.get(record.ref), now=now, stale_after=stale_after,
                                set_by=lambda journey, field: set_by.get((journey, field)))
    found += [compare_absent(system, ref, held[ref]) for ref in absent if ref in held]
    return found


STORE_FINDINGS_SQL = """
    WITH u AS (
        SELECT * FROM unnest($4::text[], $5::text[], $6::uuid[], $7::text[], $8::text[], $9::jsonb[],
                             $10::jsonb[], $11::timestamptz[], $12::jsonb[])
            AS u(key, ref, journey_id, kind, field, ours, theirs, theirs_updated_at, record)
    ), hand AS (
        -- what staff ran by hand (a fallback of the system at the site, not over yet), by reference
        -- and by the journey the reference names: ours goes to the system, never the other way
        -- (plans.proposed_action). Joined by hash, not looked up per finding: a fallback's end
        -- brings many findings and a long ledger at once
        SELECT l.ref, r.journey_id, max(l.fallback_id) AS fallback_id
        FROM fallbacks f JOIN fallback_ledger l ON l.fallback_id = f.id
        LEFT JOIN journey_refs r ON r.ref = l.ref
        WHERE f.system = $2 AND f.site = $3 AND f.status IN ('active', 'replaying')
        GROUP BY l.ref, r.journey_id
    ), by_hand AS (
        SELECT key, max(fallback_id) AS fallback_id FROM (
            SELECT u.key, h.fallback_id FROM u JOIN hand h ON h.ref = u.ref
            UNION ALL
            SELECT u.key, h.fallback_id FROM u JOIN hand h ON h.journey_id = u.journey_id
        ) matched GROUP BY key
    )
    INSERT INTO drift_items (dedupe_key, run_id, system, site, ref, journey_id, kind, field, ours,
                             theirs, theirs_updated_at, record, fallback_id)
    SELECT u.key, $1, $2, $3, u.ref, u.journey_id, u.kind, u.field, u.ours, u.theirs,
           u.theirs_updated_at, u.record, b.fallback_id
    FROM u LEFT JOIN by_hand b ON b.key = u.key
    ON CONFLICT (dedupe_key) WHERE status IN ('open', 'repairing') DO UPDATE SET
        fallback_id = coalesce(drift_items.fallback_id, EXCLUDED.fallback_id),
        run_id = EXCLUDED.run_id, journey_id = EXCLUDED.journey_id, ours = EXCLUDED.ours,
        theirs = EXCLUDED.theirs, theirs_updated_at = EXCLUDED.theirs_updated_at, record =
            EXCLUDED.record,
        updated_at = CASE WHEN drift_items.status = 'open' THEN now() ELSE drift_items.updated_at END
    RETURNING id
"""


async def store_findings(conn: asyncpg.Connection, run_id: int, system: str, site: str,
                         findings: list[Finding], checked_refs: list[str]) -> tuple[list[int], int]:
    """Record a run's drift in the caller's transaction; the ids of the items it opened, updated or resolved,
    and how many drifted (drift a person ignored, unchanged since, does not count)."""
    keys = [f.dedupe_key(system) for f in findings]
    ignored: dict[str, list[tuple[Any, Any]]] = {}
    # joins with the run's keys (one index probe each here, a hashed anti join below) where `= ANY` of a
    # parameter would compare every row with every key: linear in the run, not quadratic
    for r in await conn.fetch("SELECT d.dedupe_key, d.ours, d.theirs FROM unnest($1::text[]) AS found (key)"
                              " JOIN drift_items d ON d.dedupe_key = found.key AND d.status = 'ignored'",
                              keys):
        ignored.setdefault(r["dedupe_key"], []).append((_decoded(r["ours"]), _decoded(r["theirs"])))
    kept = [(f, key) for f, key in zip(findings, keys, strict=True)
            if (_normal(f.ours), _normal(f.theirs)) not in ignored.get(key, [])]
    changed: list[int] = []
    if kept:
        rows = await conn.fetch(
            STORE_FINDINGS_SQL,
            run_id, system, site, [k for _, k in kept], [f.ref for f, _ in kept],
            [f.journey_id for f, _ in kept],
            [f.kind for f, _ in kept], [f.field for f, _ in kept], [_jsonb(f.ours) for f, _ in kept],
            [_jsonb(f.theirs) for f, _ in kept], [f.theirs_updated_at for f, _ in kept],
            [_jsonb(f.record) for f, _ in kept])
        changed += [r["id"] for r in rows]
    gone = await conn.fetch(
        "UPDATE drift_items SET status = 'resolved', resolved_at = now(), updated_at = now(),"
        " last_check = jsonb_build_object('run', $5::bigint, 'found', 'in order', 'at', now())"
        " WHERE system = $1 AND site = $2 AND status = 'open' AND ref = ANY($3::text[])"
        " AND NOT EXISTS (SELECT 1 FROM unnest($4::text[]) AS found (key) WHERE found.key = dedupe_key)"
        " RETURNING id",
        system, site, checked_refs, [k for _, k in kept], run_id)
    changed += [r["id"] for r in gone]
    return changed, len(kept)


async def execute(conn: asyncpg.Connection, client: SnapshotClient, run: asyncpg.Record, *,
                  stale_after: timedelta) -> tuple[Run, list[int]]:
    """Carry out a started run (its row exists, `status = 'running'`); the finished run and the drift ids it
    changed."""
    system, site, day = run["system"], run["site"], run["day"]
    # records Switchboard cannot keep, by reference: neither missing nor in order, so not checked at all
    skipped: dict[str, str] = {}
    try:
        by_ref = {r.ref: r for r in await client.day(system, site, day, skipped)}
        absent = [ref for ref in await services.refs_held_on(conn, system, site, day)
                  if ref not in by_ref and ref not in skipped]
        if absent:  # a record of another day (booked days ahead) is not missing: read those by reference
            by_ref.update(await client.refs(system, site, day, absent, skipped))
            absent = [ref for ref in absent if ref not in by_ref and ref not in skipped]
    except Unreachable as exc:
        row = await conn.fetchrow(
            "UPDATE reconciliation_runs SET status = 'unreachable', error = $2, finished_at ="
            " clock_timestamp() WHERE id = $1 RETURNING *", run["id"], scrub(str(exc)[:500]))
        return services.to_run(row), []
    if skipped:  # the run has no column to count them in
        log.warning("reconciliation run %s (%s at %s) skipped %d record(s) Switchboard cannot keep: %s",
                    run["id"], system, site, len(skipped), skipped_summary(skipped))
    # a journey of another site (a walk-in on a booking made there) is that site's run's to judge: it reads
    # the reference by reference; here its values would reach this site's readers and repairs
    for ref in await services.held_elsewhere(conn, by_ref, site):
        del by_ref[ref]
    findings = await assess(conn, system, by_ref.values(), absent, stale_after=stale_after)
    async with conn.transaction():
        changed, drifted = await store_findings(conn, run["id"], system, site, findings, [*by_ref, *absent])
        row = await conn.fetchrow(
            "UPDATE reconciliation_runs SET status = 'done', checked = $2, drifted = $3, finished_at ="
            " clock_timestamp() WHERE id = $1 RETURNING *", run["id"], len(by_ref) + len(absent), drifted)
    return services.to_run(row), changed
