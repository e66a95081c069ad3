"""Settings from the environment (and an optional `.env`), read once per process."""

from __future__ import annotations

import functools
import os

import msgspec
from dotenv import load_dotenv


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str | None = None
    nats_url: str | None = None
    backend_url: str = "http://127.0.0.1:8000"
    jwt_secret: str | None = None
    jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    # an unknown `kid` refetches the JWKS at most this often (rotation without restart, no fetch storms)
    jwks_cooldown_s: float = 30.0
    data_dir: str = ".switchboard"
    # JetStream's duplicate window; Postgres keeps idempotency beyond it.
    duplicate_window_s: float = 120.0
    # copies JetStream keeps of each stream: 3 on a three-node cluster
    stream_replicas: int = 1
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
    # routing and command delivery (CONTRACT section 3); empty rules_file means the packaged v1 rules
    rules_file: str = ""
    command_relay_interval_s: float = 0.5
    command_answer_timeout_s: float = 30.0
    command_backoff_s: float = 2.0
    command_backoff_max_s: float = 300.0
    command_max_attempts: int = 5
    # a connector silent for three intervals counts as down
    heartbeat_interval_s: float = 15.0
    # a second retry of the same failure within this window is the same click, not a new attempt
    retry_debounce_s: float = 5.0
    # the dashboard: demo mode lets anyone pick a role and site (it mints the token); never in production
    dashboard_demo: bool = False
    # the wait (seconds) a site should stay under: the dashboard marks sites above it
    wait_target_s: float = 600.0
    # retention (backend/retention): days each kind of row is kept; a purge runs every interval (0: never)
    retention_interval_s: float = 3600.0
    retention_events_days: float = 30.0  # the inbox `events`: idempotency and journey timelines
    retention_webhook_receipts_days: float = 1.0  # replay protection of inbound webhooks (needs 5 minutes)
    retention_outbox_days: float = 30.0  # settled commands (ok, failed without an open failure)
    retention_failures_days: float = 90.0  # resolved and discarded failures; open ones are never purged
    retention_audit_days: float = 400.0  # the database refuses less than its floor of 90 days

    def webhook_secret(self, system: str) -> str | None:
        for pair in self.webhook_secrets:
            name, _, secret = pair.partition("=")
            if name.strip() == system and secret.strip():
                return secret.strip()
        return None


_ENV_PREFIX = "SWITCHBOARD_"
_LISTS = frozenset({"allowed_origins", "extra_systems", "webhook_secrets", "webhook_retry_s"})


def _from_env() -> dict[str, object]:
    values: dict[str, object] = {}
    for field in msgspec.structs.fields(Settings):
        raw = os.environ.get(_ENV_PREFIX + field.name.upper())
        if raw is None or raw == "":
            continue
        values[field.name] = tuple(s.strip() for s in raw.split(",") if s.strip()) if field.name in _LISTS else raw
    return values


@functools.cache
def get_settings() -> Settings:
    load_dotenv(override=False)
    return msgspec.convert(_from_env(), Settings, strict=False)
