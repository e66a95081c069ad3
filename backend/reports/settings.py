"""The reports' settings section."""

from __future__ import annotations

import msgspec

# history a manager reads year over year: the daily roll-up is never kept for less
REPORTS_RETENTION_FLOOR_DAYS = 400.0


class ReportsSection(msgspec.Struct, frozen=True, kw_only=True):
    # every replica recomputes today's and yesterday's rows this often (one at a time: an advisory lock)
    reports_interval_s: float = 300.0
    retention_reports_days: float = REPORTS_RETENTION_FLOOR_DAYS
