"""Prometheus metrics of the ingest path, served by Litestar's Prometheus controller at /metrics."""

from prometheus_client import Counter, Gauge, Histogram

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

# The live websocket (backend/live): per replica.
LIVE_CONNECTIONS = Gauge("switchboard_live_connections", "Open live websocket connections")
LIVE_UPDATES = Counter("switchboard_live_updates_total", "Live updates received from the bus and fanned out", ["topic"])
LIVE_DELIVERIES = Counter("switchboard_live_deliveries_total", "Frames written to live clients")
LIVE_DROPPED = Counter("switchboard_live_dropped_total",
                       "Updates a slow client never got because a newer one for the same key replaced them", ["topic"])
LIVE_DISCONNECTS = Counter("switchboard_live_disconnects_total", "Live connections ended, by reason", ["reason"])
LIVE_REFUSED = Counter("switchboard_live_refused_total", "Live handshakes refused, by reason", ["reason"])
LIVE_CLIENT_ERRORS = Counter("switchboard_live_client_errors_total", "Malformed or refused client messages")

# Retention (backend/retention)
RETENTION_PURGED = Counter("switchboard_retention_purged_total", "Rows removed by the retention purge", ["kind"])
