"""What is purged, when, and what never is.

Each kind of row is kept for its own setting (`SWITCHBOARD_RETENTION_*_DAYS`) and deleted in short
batches, so a first purge of a large table never holds one long transaction. Never purged: open or
retrying failures; commands still pending, held or sent, and failed commands whose failure is still
open (a retry re-sends them); drift still open or repairing, and the runs it points to; the latest run
of each system and site (its status); fallbacks still active or replaying, with their ledgers;
daily reports younger than their floor of 400 days (`SWITCHBOARD_RETENTION_REPORTS_DAYS` may only
raise it); open or acknowledged alerts; audit rows younger than the database's floor (sql/008: the
audit log is append-only, and the trigger refuses any DELETE of a row younger than the floor).

Ignored drift is not raised again while it stays the same (backend/reconciliation/runs.py) only as
long as the ignored item is kept: after `retention_drift_days` the same drift may be raised anew.
An ended fallback goes with its ledger and the manual ticket numbers of its days, after
`retention_fallbacks_days` (the audit log keeps who started and ended it, and why).

Events go with their inbox rows (`event_inbox`, where idempotency lives since sql/007), both after
`retention_events_days`, except the inbox rows of the steps of a fallback not ended yet (its replay tells
a step already applied by them). A purged inbox row is a forgotten (source, id): the same event arriving
again after that is applied again. JetStream's duplicate window (minutes) is far shorter than the
retention, so this only concerns a connector replaying its history from further back than
`retention_events_days`; the merge makes the journey's state come out the same, but its rules may issue
their commands again.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

import asyncpg
import msgspec

from backend import metrics
from backend.reports.settings import REPORTS_RETENTION_FLOOR_DAYS
from backend.settings import BackendSettings

Kind = Literal["events", "inbox", "webhook_receipts", "outbox", "floor_steps", "failures", "drift",
               "reconciliation_runs", "fallback_ledger", "fallbacks", "manual_tickets", "alerts", "reports",
               "journeys", "audit"]
WEBHOOK_TIMESTAMP_TOLERANCE = timedelta(minutes=5)  # Standard Webhooks: a receipt must outlive it
BATCH = 5000
_LOCK = 0x5357_5254  # one purge at a time across replicas and the CLI

# kind: (table, key columns, what may go; $1 is the retention as an interval)
_BATCHED: dict[Kind, tuple[str, str, str]] = {
    "events": ("events", "source, id", "applied_at < now() - $1::interval"),
    # a step of a fallback not ended yet is settled by its inbox row: its replay, however late, must find it
    "inbox": ("event_inbox", "source, id", "applied_at < now() - $1::interval"
              " AND NOT EXISTS (SELECT 1 FROM fallback_ledger l JOIN fallbacks f ON f.id = l.fallback_id"
              " WHERE l.event_source = event_inbox.source AND l.event_id = event_inbox.id"
              " AND f.status <> 'ended')"),
    "webhook_receipts": ("webhook_receipts", "system, webhook_id", "received_at < now() - $1::interval"),
    "outbox": ("commands", "id", "status IN ('ok', 'failed') AND updated_at < now() - $1::interval"
               " AND NOT EXISTS (SELECT 1 FROM failures f WHERE f.command_id = commands.id::text"
               " AND f.status IN ('open', 'retrying'))"),
    # a floor action's step id goes with its command (after it: a repeat must find the command it names)
    "floor_steps": ("floor_steps", "step_id", "created_at < now() - $1::interval"
                    " AND NOT EXISTS (SELECT 1 FROM commands c WHERE c.id = floor_steps.command_id)"),
    "failures": ("failures", "id", "status IN ('resolved', 'discarded') AND last_at < now() - $1::interval"),
    # in this order: drift before the runs it points to, a ledger before its fallback
    "drift": ("drift_items", "id",
              "status IN ('resolved', 'ignored') AND resolved_at < now() - $1::interval"),
    "reconciliation_runs": (
        "reconciliation_runs", "id",
        "status <> 'running' AND started_at < now() - $1::interval"
        " AND NOT EXISTS (SELECT 1 FROM drift_items d WHERE d.run_id = reconciliation_runs.id)"
        " AND EXISTS (SELECT 1 FROM reconciliation_runs later WHERE later.system = reconciliation_runs.system"
        " AND later.site = reconciliation_runs.site AND later.started_at > reconciliation_runs.started_at)"),
    "fallback_ledger": ("fallback_ledger", "fallback_id, seq",
                        "fallback_id IN (SELECT id FROM fallbacks WHERE status = 'ended'"
                        " AND ended_at < now() - $1::interval)"),
    "fallbacks": ("fallbacks", "id", "status = 'ended' AND ended_at < now() - $1::interval"
                  " AND NOT EXISTS (SELECT 1 FROM fallback_ledger l WHERE l.fallback_id = fallbacks.id)"),
    "manual_tickets": ("manual_tickets", "site, day", "day < (now() - $1::interval)::date"),
    # resolved alerts go with their webhook deliveries (ON DELETE CASCADE)
    "alerts": ("alerts", "id", "status = 'resolved' AND resolved_at < now() - $1::interval"),
    "reports": ("daily_reports", "site, day", "day < (now() - $1::interval)::date"),
}
# A finished journey goes (with its references, and the aliases of journeys merged into it) once nothing in
# use names it: no command still to settle, no open failure or drift, no fallback still to replay. Found
# through `journeys_updated`. A reference of a purged journey that comes again starts a new journey.
_JOURNEYS_GONE = """
j.stage IN ('completed', 'cancelled', 'no_show') AND j.updated_at < now() - $1::interval
AND NOT EXISTS (SELECT 1 FROM commands c WHERE c.journey_id = j.id
                AND c.status IN ('pending', 'held', 'sent'))
AND NOT EXISTS (SELECT 1 FROM failures f WHERE f.journey_id = j.id AND f.status IN ('open', 'retrying'))
AND NOT EXISTS (SELECT 1 FROM drift_items d WHERE d.journey_id = j.id AND d.status IN ('open', 'repairing'))
AND NOT EXISTS (SELECT 1 FROM fallback_ledger l JOIN fallbacks fb ON fb.id = l.fallback_id
                WHERE l.journey_id = j.id AND fb.status <> 'ended')
"""
_PURGE_JOURNEYS = f"""
WITH gone AS (DELETE FROM journeys WHERE id IN (SELECT j.id FROM journeys j WHERE {_JOURNEYS_GONE} LIMIT $2)
              RETURNING id),
     refs AS (DELETE FROM journey_refs WHERE journey_id IN (SELECT id FROM gone)),
     aliases AS (DELETE FROM journey_aliases WHERE new_id IN (SELECT id FROM gone))
SELECT count(*) FROM gone
"""
# kinds kept as long as another: an inbox row with its event, a ledger and ticket numbers with their fallback
_KEPT_WITH: dict[Kind, Kind] = {"inbox": "events", "floor_steps": "outbox", "fallback_ledger": "fallbacks",
                                "manual_tickets": "fallbacks"}


class RetentionPolicy(msgspec.Struct, frozen=True, kw_only=True):
    events: timedelta
    webhook_receipts: timedelta
    outbox: timedelta
    failures: timedelta
    drift: timedelta
    reconciliation_runs: timedelta
    fallbacks: timedelta
    audit: timedelta
    alerts: timedelta = timedelta(days=400)
    reports: timedelta = timedelta(days=REPORTS_RETENTION_FLOOR_DAYS)
    journeys: timedelta = timedelta(days=90)

    @classmethod
    def from_settings(cls, settings: BackendSettings) -> RetentionPolicy:
        """The retention section's periods, with the alerts' and reports' own."""
        days = settings.retention
        policy = cls(events=timedelta(days=days.retention_events_days),
                     webhook_receipts=timedelta(days=days.retention_webhook_receipts_days),
                     outbox=timedelta(days=days.retention_outbox_days),
                     failures=timedelta(days=days.retention_failures_days),
                     drift=timedelta(days=days.retention_drift_days),
                     reconciliation_runs=timedelta(days=days.retention_reconciliation_runs_days),
                     fallbacks=timedelta(days=days.retention_fallbacks_days),
                     audit=timedelta(days=days.retention_audit_days),
                     journeys=timedelta(days=days.retention_journeys_days),
                     alerts=timedelta(days=settings.alerts.retention_alerts_days),
                     reports=timedelta(days=settings.reports.retention_reports_days))
        if policy.events <= timedelta(seconds=settings.streams.duplicate_window_s):
            raise ValueError("retention_events_days must exceed JetStream's duplicate window")
        if policy.webhook_receipts <= WEBHOOK_TIMESTAMP_TOLERANCE:
            raise ValueError("retention_webhook_receipts_days must exceed the 5-minute webhook timestamp"
                             " tolerance")
        if policy.reports < timedelta(days=REPORTS_RETENTION_FLOOR_DAYS):
            raise ValueError(f"retention_reports_days must be at least {REPORTS_RETENTION_FLOOR_DAYS:g} (the"
                             " daily reports' floor)")
        if min(policy.outbox, policy.failures, policy.drift, policy.reconciliation_runs,
               policy.fallbacks, policy.alerts, policy.journeys) <= timedelta(0):
            raise ValueError("retention periods must be positive")
        return policy

    def kept_for(self, kind: Kind) -> timedelta:
        return getattr(self, _KEPT_WITH.get(kind, kind))


async def check_audit_floor(conn: asyncpg.Connection, policy: RetentionPolicy) -> None:
    """Refuse to start with an audit retention the database would refuse at every purge."""
    floor: timedelta = await conn.fetchval("SELECT audit_retention_floor()")
    if policy.audit < floor:
        raise ValueError(f"retention_audit_days must be at least {floor.days} (the database's floor)")


async def purge(pool: asyncpg.Pool, policy: RetentionPolicy, *, dry_run: bool = False,
                batch: int = BATCH) -> dict[Kind, int] | None:
    """Rows removed (or, with `dry_run`, that would be) per kind; None when another purge is running."""
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK):
            return None
        try:
            counts: dict[Kind, int] = {}
            for kind, (table, key, condition) in _BATCHED.items():
                counts[kind] = await _purge_batched(conn, table, key, condition, policy.kept_for(kind),
                                                    dry_run=dry_run, batch=batch)
            counts["journeys"] = await _purge_journeys(conn, policy.journeys, dry_run=dry_run, batch=batch)
            counts["audit"] = await _purge_audit(conn, policy.audit, dry_run=dry_run)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK)
    if not dry_run:
        for kind, removed in counts.items():
            metrics.RETENTION_PURGED.labels(kind).inc(removed)
    return counts


async def _purge_batched(conn: asyncpg.Connection, table: str, key: str, condition: str, kept: timedelta, *,
                         dry_run: bool, batch: int) -> int:
    if dry_run:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table} WHERE {condition}", kept))
    removed = 0
    while True:
        status = await conn.execute(
            f"DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM {table} WHERE {condition} LIMIT $2)",
            kept, batch)
        deleted = int(status.split()[-1])
        removed += deleted
        if deleted < batch:
            return removed


async def _purge_journeys(conn: asyncpg.Connection, kept: timedelta, *, dry_run: bool, batch: int) -> int:
    if dry_run:
        return int(await conn.fetchval(f"SELECT count(*) FROM journeys j WHERE {_JOURNEYS_GONE}", kept))
    removed = 0
    while True:
        deleted = int(await conn.fetchval(_PURGE_JOURNEYS, kept, batch))
        removed += deleted
        if deleted < batch:
            return removed


async def _purge_audit(conn: asyncpg.Connection, kept: timedelta, *, dry_run: bool) -> int:
    if dry_run:
        return int(await conn.fetchval("SELECT count(*) FROM audit_log WHERE at < now() - $1::interval",
                                       kept))
    return int(await conn.fetchval("SELECT purge_audit_log($1::interval)", kept))
