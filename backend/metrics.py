"""Prometheus metrics of every stage, served by Litestar's Prometheus controller at /metrics.

Label values from inbound messages are bounded: a `type` outside the catalogue and a `system` that
is not registered are counted as `other`, so a flood of made-up subjects cannot grow the series.
docs/grafana/switchboard.json charts them; tests/test_observability.py keeps the two in step.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable
from typing import Protocol

from prometheus_client import Counter, Gauge, Histogram

from switchboard.events import EVENT_TYPES, RESERVED_SYSTEMS, SEED_SYSTEMS

OTHER = "other"

EVENTS_IN = Counter("switchboard_events_in_total", "Messages fetched from SVC_EVENTS, by the type and system"
                    " their subject names", ["type", "system"])
EVENTS_APPLIED = Counter("switchboard_events_applied_total", "Events applied to journey state",
                         ["type", "system"])
EVENTS_DUPLICATE = Counter("switchboard_events_duplicate_total", "Events recognised as already applied")
EVENTS_FAILED = Counter("switchboard_events_failed_total", "Inbound messages recorded as failures",
                        ["kind", "type", "system"])
FIELDS_DROPPED = Counter("switchboard_unknown_fields_dropped_total", "Unknown non-personal fields dropped",
                         ["type"])
APPLY_SECONDS = Histogram(
    "switchboard_apply_batch_seconds",
    "Time to apply, commit and acknowledge one batch (validated while the one before was applied)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
BATCH_SIZE = Histogram("switchboard_apply_batch_size", "Messages per applied batch",
                       buckets=(1, 10, 50, 100, 250, 500, 1000))
INGEST_DELAY = Histogram(
    "switchboard_ingest_delay_seconds",
    "From JetStream storing a batch's oldest message to the batch's commit",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)

# Sampled every SWITCHBOARD_METRICS_SAMPLE_INTERVAL_S by each replica (backend/system/sampler.py);
# every replica reports the same shared figures, so take max() across instances.
CONSUMER_PENDING = Gauge("switchboard_consumer_pending", "Messages on SVC_EVENTS not yet delivered to the"
                         " apply consumer: its lag")
CONSUMER_ACK_PENDING = Gauge("switchboard_consumer_ack_pending", "Messages delivered to the apply consumer"
                             " and not acknowledged yet")
OUTBOX_COMMANDS = Gauge("switchboard_outbox_commands", "Commands in the outbox not settled yet, by status",
                        ["status"])
OUTBOX_STATUSES = ("pending", "held", "sent")

# The live websocket (backend/live): per replica.
LIVE_CONNECTIONS = Gauge("switchboard_live_connections", "Open live websocket connections")
LIVE_UPDATES = Counter("switchboard_live_updates_total", "Live updates received from the bus and fanned out",
                       ["topic"])
LIVE_DELIVERIES = Counter("switchboard_live_deliveries_total", "Frames written to live clients")
LIVE_DROPPED = Counter("switchboard_live_dropped_total",
                       "Updates a slow client never got because a newer one for the same key replaced them",
                       ["topic"])
LIVE_DISCONNECTS = Counter("switchboard_live_disconnects_total", "Live connections ended, by reason",
                           ["reason"])
LIVE_REFUSED = Counter("switchboard_live_refused_total", "Live handshakes refused, by reason", ["reason"])
LIVE_CLIENT_ERRORS = Counter("switchboard_live_client_errors_total", "Malformed or refused client messages")


class _Failure(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def event_type(self) -> str | None: ...
    @property
    def system(self) -> str | None: ...


def type_label(type_: str | None) -> str:
    return type_ if type_ in EVENT_TYPES else OTHER


def system_label(system: str | None, known_systems: frozenset[str] = SEED_SYSTEMS) -> str:
    return system if system in known_systems or system in RESERVED_SYSTEMS else OTHER


def count_failures(failures: Iterable[_Failure], known_systems: frozenset[str] = SEED_SYSTEMS) -> None:
    for (kind, type_, system), n in Tally(
        (f.kind, type_label(f.event_type), system_label(f.system, known_systems)) for f in failures
    ).items():
        EVENTS_FAILED.labels(kind, type_, system).inc(n)

# Retention (backend/retention)
RETENTION_PURGED = Counter("switchboard_retention_purged_total", "Rows removed by the retention purge",
                           ["kind"])
ALERTS_RAISED = Counter("switchboard_alerts_raised_total", "Alerts raised, by rule (once across replicas)",
                        ["rule"])
ALERTS_ACTIVE = Gauge("switchboard_alerts_active", "Alerts open or acknowledged, by rule", ["rule"])
ALERT_DELIVERIES = Counter("switchboard_alert_deliveries_total",
                           "Alert webhook delivery attempts, by outcome", ["outcome"])
ALERT_DELIVERIES_PENDING = Gauge("switchboard_alert_deliveries_pending",
                                 "Alert webhook deliveries queued and not yet delivered or given up")
