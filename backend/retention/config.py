"""The retention settings section: days each kind of row is kept (alerts and reports keep their own)."""

from __future__ import annotations

import msgspec


class RetentionSection(msgspec.Struct, frozen=True, kw_only=True):
    # a purge runs every interval (0: never)
    retention_interval_s: float = 3600.0
    retention_events_days: float = 30.0  # the inbox `events`: idempotency and journey timelines
    retention_webhook_receipts_days: float = 1.0  # replay protection of inbound webhooks (needs 5 minutes)
    retention_outbox_days: float = 30.0  # settled commands (ok, failed without an open failure)
    retention_failures_days: float = 90.0  # resolved and discarded failures; open ones are never purged
    retention_drift_days: float = 90.0  # resolved and ignored drift; open or repairing drift is never purged
    retention_reconciliation_runs_days: float = 30.0  # runs no drift points to, but each pair's latest
    retention_fallbacks_days: float = 400.0  # ended fallbacks with their ledger; active or replaying never
    retention_audit_days: float = 400.0  # the database refuses less than its floor of 90 days
    # finished journeys with their references; a journey still in use (an unsettled command, open failure or
    # drift, a fallback to replay) is never purged
    retention_journeys_days: float = 90.0
