"""Each system's traffic, counted per minute as the apply writes it: the integrations' figures (events per
minute and apply latency over the last `RATE_WINDOW_MIN` minutes) read a few rows of `traffic_minutes`
instead of every event of the window (sorting 300,000 rows every 10 s at 1,000 events/s, 270–340 ms of
Postgres each time, measured; docs/performance.md).

A latency (an event's upstream `time` to its apply) is counted in a bucket of a geometric histogram:
bucket 0 below 1 ms, bucket i in [1.25**(i-1), 1.25**i) ms, the last one from a day up. A percentile is
read from the buckets, geometrically interpolated inside its bucket: within a bucket's width (25%) of the
exact one.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

import msgspec

RATE_WINDOW_MIN = 5
_GROWTH = 1.25
# upper bounds in ms of buckets 0 … n-2; the last bucket has none
_BOUNDS = tuple(_GROWTH**i for i in range(math.ceil(math.log(86_400_000, _GROWTH)) + 1))
BUCKETS = len(_BOUNDS) + 1


class TrafficRow(msgspec.Struct):
    """One system's events of one batch, as the apply's write adds them to the minute of its transaction (by
    the database's clock, as the figures read them)."""

    system: str
    latency_ms: list[int]  # events per bucket


def bucket(latency: timedelta) -> int:
    return bisect.bisect_right(_BOUNDS, latency.total_seconds() * 1000)


def rows(latencies: dict[str, list[int]]) -> list[TrafficRow]:
    """`latencies`: each system's count per bucket (`counter()`) of one batch."""
    return [TrafficRow(system, counts) for system, counts in latencies.items()]


def counter() -> list[int]:
    return [0] * BUCKETS


def window(now: datetime) -> tuple[datetime, float]:
    """The first minute the figures read and how much of it lies inside the last `RATE_WINDOW_MIN` minutes:
    the minutes before the current one count whole, the oldest only for the part the window covers."""
    current = now.replace(second=0, microsecond=0)
    return current - timedelta(minutes=RATE_WINDOW_MIN), 1 - (now - current) / timedelta(minutes=1)


def percentile(counts: Sequence[float], q: float) -> float | None:
    """The `q` quantile (0–1) of the latencies counted, in ms; None when none was."""
    total = sum(counts)
    if total <= 0:
        return None
    rank, seen = q * total, 0.0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            if i == 0:
                return 0.0
            low = _BOUNDS[i - 1]
            if i == len(_BOUNDS):
                return low  # a day or more: the bucket has no upper bound
            return low * _GROWTH ** ((rank - seen) / n)
        seen += n
    return None


def summed(rows: Iterable[tuple[Sequence[int], float]]) -> list[float]:
    """Bucket counts of several minutes added up, each minute weighted by the share of it the window holds."""
    total = [0.0] * BUCKETS
    for counts, weight in rows:
        for i, n in enumerate(counts):
            if n:
                total[i] += n * weight
    return total
