from __future__ import annotations

from datetime import date, datetime

import msgspec


class DailyReport(msgspec.Struct, kw_only=True):
    """One site's day (in the site's time zone)."""

    site: str
    day: date
    arrivals: int
    served: int
    no_shows: int
    cancellations: int
    wait_p50_s: float | None
    wait_p90_s: float | None
    # share of the day's calls whose wait stayed within their service's target (None: nobody called)
    within_target: float | None
    failures: int
    drift: int
    computed_at: datetime


class DailyReportList(msgspec.Struct):
    items: list[DailyReport]


CSV_COLUMNS = tuple(DailyReport.__struct_fields__)
