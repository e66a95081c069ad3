from __future__ import annotations

from datetime import datetime

import msgspec


class SiteFlow(msgspec.Struct, kw_only=True):
    site: str
    stages: dict[str, int]
    arrivals_per_min: float
    completions_per_min: float
    wait_p50_s: float | None
    wait_p90_s: float | None
    service_p50_s: float | None
    # share of the last hour's calls whose wait stayed within the site's (or service's) target
    within_target: float | None = None
    # of the last day's ended journeys, the share that were no-shows, and cancelled
    no_show_rate: float | None = None
    cancellation_rate: float | None = None


class SiteCapacity(msgspec.Struct, kw_only=True):
    site: str
    counters_open: int
    counters_busy: int
    staff_on_duty: int
    queue_length: int
    est_wait_s: float | None
    utilisation: float | None
    updated_at: datetime


class FlowList(msgspec.Struct):
    items: list[SiteFlow]


class CapacityList(msgspec.Struct):
    items: list[SiteCapacity]


class FlowMinute(msgspec.Struct, kw_only=True):
    """Arrivals and completions per minute over the `RATE_WINDOW_MIN` minutes up to `minute`: the
    same measure `SiteFlow` gives now, so a chart can draw the past and continue it live."""

    minute: datetime
    arrivals_per_min: float
    completions_per_min: float


class SiteFlowHistory(msgspec.Struct, kw_only=True):
    site: str
    points: list[FlowMinute]


class FlowHistoryList(msgspec.Struct):
    items: list[SiteFlowHistory]
