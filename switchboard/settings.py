"""Settings from the environment (and an optional `.env`), read once per process."""

from __future__ import annotations

import functools
import os
import typing
from typing import TypeVar

import msgspec
from dotenv import load_dotenv


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str | None = None
    # the role that owns the tables, for migrations (`switchboard migrate`; the backend at start when set).
    # Unset, the backend migrates as database_url's role (docs/security.md: production keeps them apart)
    database_owner_url: str | None = None
    nats_url: str | None = None
    # the NATS credentials file (CONTRACT section 8): a user .creds file, a bare nkey seed or a token
    nats_creds: str | None = None
    # a connector profile limited to sites (`switchboard connector profile --site`): the sites it may publish
    # for
    connector_sites: tuple[str, ...] = ()
    backend_url: str = "http://127.0.0.1:8000"
    jwt_secret: str | None = None
    jwks_url: str | None = None
    # keys the backend's own event signatures and manual users' pseudonyms; every replica needs the same one.
    # Unset: the JWT secret. With a JWKS and no JWT secret one of the two must be set (else the backend
    # refuses to start)
    signing_secret: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    # an unknown `kid` refetches the JWKS at most this often (rotation without restart, no fetch storms)
    jwks_cooldown_s: float = 30.0
    # and refetched in the background this often besides (the last keys serve while the provider is down)
    jwks_refresh_s: float = 300.0
    # a token valid for longer than this (exp - iat; exp - now without iat) is refused
    max_token_lifetime_s: float = 12 * 3600.0
    # requests per second to the public ingest routes: per connector system (POST /api/v1/events) and per
    # client address (POST /api/v1/webhooks/<system>), per backend replica; 0: no limit
    ingest_rate_per_s: int = 100
    webhook_rate_per_s: int = 100
    data_dir: str = ".switchboard"
    # JetStream's duplicate window; Postgres keeps idempotency beyond it.
    duplicate_window_s: float = 120.0
    # copies JetStream keeps of each stream: 3 on a three-node cluster
    stream_replicas: int = 1
    # how long JetStream keeps each message (both streams): the apply worker needs minutes, an outage of the
    # database a few days at most; past that a raw message (which may carry what validation refuses) is gone
    stream_max_age_s: float = 7 * 24 * 3600.0
    # trust in the data (CONTRACT section 9): how far in the future an event may be dated, and `system=other`
    # pairs naming the other systems whose references a system's events may have as subject
    max_future_s: float = 300.0
    acts_for: tuple[str, ...] = ("contact_center=appointments",)
    apply_batch: int = 500
    max_event_bytes: int = 64 * 1024
    allowed_origins: tuple[str, ...] = ()
    # systems beyond the five seed systems whose connectors may publish
    extra_systems: tuple[str, ...] = ()
    # inbound Standard Webhooks: `<system>=<secret>` pairs (secrets as `whsec_<base64>`)
    webhook_secrets: tuple[str, ...] = ()
    # the outbound webhook connector (connectors.webhook): commands for `webhook_system`, signed, to this URL
    webhook_target_url: str | None = None
    webhook_target_secret: str | None = None
    webhook_system: str = "webhook"
    webhook_retry_s: tuple[str, ...] = ("1", "5", "30")  # waits between delivery attempts
    webhook_allow_private: bool = False  # allow loopback and private targets (local development only)
    log_level: str = "INFO"
    # `json`: one JSON object per line, tokens and personal data scrubbed (switchboard/logs.py); `text` to
    # read by eye
    log_format: str = "json"
    # traces (switchboard/tracing.py): `none`, `console` (spans as JSON lines on stderr) or `otlp` (OTLP/HTTP
    # to otel_endpoint; needs the opentelemetry-exporter-otlp-proto-http package); connectors sample new
    # traces at otel_sample_ratio, everything downstream follows their decision
    otel_exporter: str = "none"
    otel_endpoint: str = ""
    otel_sample_ratio: float = 1.0
    # how often each backend samples consumer lag and outbox depth for /metrics
    metrics_sample_interval_s: float = 5.0
    # routing and command delivery (CONTRACT section 3); empty rules_file means the packaged v1 rules
    rules_file: str = ""
    command_relay_interval_s: float = 0.5
    command_answer_timeout_s: float = 30.0
    command_backoff_s: float = 2.0
    command_backoff_max_s: float = 300.0
    command_max_attempts: int = 5
    # a connector silent for three intervals counts as down
    heartbeat_interval_s: float = 15.0
    # integration health is re-decided this often (every replica; a change is published once)
    integration_check_interval_s: float = 2.0
    # and its figures (events/min, latency...) go out on the `integrations` topic this often besides
    integration_figures_interval_s: float = 10.0
    # recovery pacing (docs/fallback.md): commands per minute per system, halved on trouble, raised by
    # `pace_increase_per_s` per trouble-free second, restarting at `pace_start_per_min` after an outage
    pace_min_per_min: float = 6.0
    pace_max_per_min: float = 6000.0
    pace_start_per_min: float = 60.0
    pace_increase_per_s: float = 10.0
    # while a system recovers, commands that reach staff go out at most this often per open counter of the
    # site
    pace_per_counter_per_min: float = 2.0
    pace_staff_commands: tuple[str, ...] = ("staff.alert", "ticket.prioritize", "visit.context")
    # a manual action answers once its event is applied, or says it is still on its way after this long
    manual_apply_timeout_s: float = 10.0
    # a second retry of the same failure within this window is the same click, not a new attempt
    retry_debounce_s: float = 5.0
    # the dashboard: demo mode lets anyone pick a role and site (it mints the token); never in production
    dashboard_demo: bool = False
    # the wait (seconds) a site should stay under: the dashboard marks sites above it
    wait_target_s: float = 600.0
    # reconciliation (CONTRACT section 5): scheduled runs per system and active site every interval (0: none)
    reconcile_interval_s: float = 900.0
    # how often the reconciler looks for fallbacks to replay and repairs to verify
    reconcile_tick_s: float = 2.0
    # a journey in a non-final stage unchanged for this long (a booking this long past its slot) is `stale`
    reconcile_stale_after_s: float = 4 * 3600.0
    # drift kinds repaired without a person, with their proposed action (e.g. missing_here,stale); none by
    # default
    reconcile_auto_repair: tuple[str, ...] = ()
    # a system that does not answer a snapshot page within this is `unreachable`
    reconcile_snapshot_timeout_s: float = 5.0
    # an accept_source whose corrective events are not applied by then is reopened, unverified
    reconcile_repair_timeout_s: float = 60.0
    # retention (backend/retention): days each kind of row is kept; a purge runs every interval (0: never)
    retention_interval_s: float = 3600.0
    retention_events_days: float = 30.0  # the inbox `events`: idempotency and journey timelines
    retention_webhook_receipts_days: float = 1.0  # replay protection of inbound webhooks (needs 5 minutes)
    retention_outbox_days: float = 30.0  # settled commands (ok, failed without an open failure)
    retention_failures_days: float = 90.0  # resolved and discarded failures; open ones are never purged
    retention_drift_days: float = 90.0  # resolved and ignored drift; open or repairing drift is never purged
    retention_reconciliation_runs_days: float = 30.0  # runs no drift points to, but each pair's latest
    retention_fallbacks_days: float = 400.0  # ended fallbacks with their ledger; active or replaying never
    retention_audit_days: float = 400.0  # the database refuses less than its floor of 90 days

    def webhook_secret(self, system: str) -> str | None:
        for pair in self.webhook_secrets:
            name, _, secret = pair.partition("=")
            if name.strip() == system and secret.strip():
                return secret.strip()
        return None


_ENV_PREFIX = "SWITCHBOARD_"
SectionT = TypeVar("SectionT", bound=msgspec.Struct)


def _is_list(annotation: object) -> bool:
    return typing.get_origin(annotation) is tuple or annotation is tuple


def _from_env(section: type[msgspec.Struct]) -> dict[str, object]:
    """Each field from `SWITCHBOARD_<FIELD>`; a tuple field from a comma-separated list."""
    hints = typing.get_type_hints(section)
    values: dict[str, object] = {}
    for field in msgspec.structs.fields(section):
        raw = os.environ.get(_ENV_PREFIX + field.name.upper())
        if raw is None or raw == "":
            continue
        values[field.name] = tuple(s.strip() for s in raw.split(",") if s.strip()) \
            if _is_list(hints[field.name]) else raw
    return values


@functools.cache
def load_section(section: type[SectionT]) -> SectionT:
    """One package's section of the settings (a frozen Struct of defaults), read once per process.

    A package declares its own section beside its code; every section shares the `SWITCHBOARD_` names.
    """
    load_dotenv(override=False)
    return msgspec.convert(_from_env(section), section, strict=False)


def get_settings() -> Settings:
    return load_section(Settings)
