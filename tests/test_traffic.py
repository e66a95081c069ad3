"""Traffic per minute (backend/integrations/traffic.py): latencies counted in geometric buckets, percentiles
read back within a bucket's width of the exact ones, and the window's oldest minute counted in part."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

from backend.integrations import traffic


def exact(values: list[float], q: float) -> float:
    """The nearest-rank quantile: the least value with at least `q` of them at or below it."""
    return sorted(values)[max(math.ceil(q * len(values)) - 1, 0)]


def test_percentiles_from_the_buckets_are_within_a_bucket_of_the_exact_ones():
    rng = random.Random(7)
    for _ in range(20):
        latencies = [10 ** rng.uniform(0, 6) for _ in range(rng.randint(1, 2000))]  # 1 ms to 17 min
        counts = traffic.counter()
        for ms in latencies:
            counts[traffic.bucket(timedelta(milliseconds=ms))] += 1
        for q in (0.5, 0.9, 0.99):
            estimate = traffic.percentile(counts, q)
            assert estimate is not None
            assert exact(latencies, q) / 1.25 <= estimate <= exact(latencies, q) * 1.25, (q, len(latencies))


def test_the_buckets_edges():
    assert traffic.bucket(timedelta(milliseconds=-300)) == 0  # an upstream clock ahead: no latency
    assert traffic.bucket(timedelta(microseconds=999)) == 0
    assert traffic.bucket(timedelta(days=3)) == traffic.BUCKETS - 1
    assert traffic.percentile(traffic.counter(), 0.5) is None
    only_late = traffic.counter()
    only_late[-1] = 4
    assert (traffic.percentile(only_late, 0.99) or 0) >= 86_400_000  # a day or more: its lower bound


def test_the_window_counts_the_oldest_minute_for_the_part_it_covers():
    first, share = traffic.window(datetime(2026, 12, 6, 10, 7, 15, tzinfo=UTC))
    assert (first, share) == (datetime(2026, 12, 6, 10, 2, tzinfo=UTC), 0.75)
    counts = traffic.counter()
    counts[3] = 8
    assert sum(traffic.summed([(counts, 1.0), (counts, share)])) == 14
