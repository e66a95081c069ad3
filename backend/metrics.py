"""Prometheus metrics of the ingest path, served by Litestar's Prometheus controller at /metrics."""

from prometheus_client import Counter, Histogram

EVENTS_APPLIED = Counter("switchboard_events_applied_total", "Events applied to journey state", ["type"])
EVENTS_DUPLICATE = Counter("switchboard_events_duplicate_total", "Events recognised as already applied")
EVENTS_FAILED = Counter("switchboard_events_failed_total", "Inbound messages recorded as failures", ["kind"])
FIELDS_DROPPED = Counter("switchboard_unknown_fields_dropped_total", "Unknown non-personal fields dropped", ["type"])
APPLY_SECONDS = Histogram(
    "switchboard_apply_batch_seconds", "Time to validate, apply and commit one batch",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
BATCH_SIZE = Histogram("switchboard_apply_batch_size", "Messages per applied batch",
                       buckets=(1, 10, 50, 100, 250, 500, 1000))
