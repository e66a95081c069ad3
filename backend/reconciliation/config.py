"""The reconciliation settings section (CONTRACT section 5)."""

from __future__ import annotations

import msgspec


class ReconciliationSection(msgspec.Struct, frozen=True, kw_only=True):
    # scheduled runs per system and active site every interval (0: none)
    reconcile_interval_s: float = 900.0
    # how often the reconciler looks for fallbacks to replay and repairs to verify
    reconcile_tick_s: float = 2.0
    # a journey in a non-final stage unchanged for this long (a booking this long past its slot) is `stale`
    reconcile_stale_after_s: float = 4 * 3600.0
    # drift kinds repaired without a person, with their proposed action (e.g. missing_here,stale); none by
    # default
    reconcile_auto_repair: tuple[str, ...] = ()
    # a system that does not answer a snapshot page within this is `unreachable`
    reconcile_snapshot_timeout_s: float = 5.0
    # records one snapshot read may bring (a site's day, or the references asked for): a connector whose
    # paging goes past it ends the run `unreachable` with the reason
    reconcile_snapshot_max_records: int = 100_000
    # an accept_source whose corrective events are not applied by then is reopened, unverified
    reconcile_repair_timeout_s: float = 60.0
