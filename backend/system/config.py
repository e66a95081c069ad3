"""The system routes' settings section (`/metrics`)."""

from __future__ import annotations

import msgspec


class SystemSection(msgspec.Struct, frozen=True, kw_only=True):
    # how often each backend samples consumer lag and outbox depth for /metrics
    metrics_sample_interval_s: float = 5.0
