from __future__ import annotations

from datetime import datetime

import msgspec

from backend.integrations.health import Status


class PaceView(msgspec.Struct, kw_only=True):
    """How fast the system's commands go out now, and why (`recovering` while below full speed)."""

    rate_per_min: float
    recovering: bool
    reason: str
    # the caller's sites whose open counters hold staff commands back: {site: counters open}; None on the
    # live topic, whose items every reader sees (the reason names no site, only how many)
    floor: dict[str, int] | None = None


class IntegrationStatus(msgspec.Struct, kw_only=True):
    """A system's health as last decided."""

    system: str
    status: Status
    reason: str
    since: datetime
    last_heartbeat_at: datetime | None
    pace: PaceView | None


class Integration(IntegrationStatus, kw_only=True):
    """The status plus what the system's traffic looks like (rates over the last `RATE_WINDOW_MIN` minutes):
    the API's item and the `integrations` live topic's, keyed by system."""

    heartbeat_age_s: float | None
    events_per_min: float
    invalid_per_min: float
    # ok / (ok + failed) of the commands settled in the last `SUCCESS_WINDOW_MIN` minutes; None: none settled
    command_success_rate: float | None
    held_commands: int
    # event time to applied, over the last `RATE_WINDOW_MIN` minutes (heartbeats aside)
    apply_latency_p50_ms: float | None
    apply_latency_p99_ms: float | None
    # the shared apply consumer's lag (the same for every system); None where it was not asked (snapshots)
    consumer_lag: int | None = None


class IntegrationPage(msgspec.Struct, kw_only=True):
    items: list[Integration]
    next_cursor: str | None = None
    # messages not yet delivered to the apply consumer (shared by every system); None: NATS did not answer
    consumer_lag: int | None
