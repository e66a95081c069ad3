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
    # reconciliation (CONTRACT section 5): scheduled runs per system and active site every interval (0: none)
    reconcile_interval_s: float = 900.0
    # how often the reconciler looks for fallbacks to replay and repairs to verify
    reconcile_tick_s: float = 2.0
    # a journey in a non-final stage unchanged for this long (a booking this long past its slot) is `stale`
    reconcile_stale_after_s: float = 4 * 3600.0
    # drift kinds repaired without a person, with their proposed action (e.g. missing_here,stale); none by default
    reconcile_auto_repair: tuple[str, ...] = ()
    # a system that does not answer a snapshot page within this is `unreachable`
    reconcile_snapshot_timeout_s: float = 5.0
    # an accept_source whose corrective events are not applied by then is reopened, unverified
    reconcile_repair_timeout_s: float = 60.0

    def webhook_secret(self, system: str) -> str | None:
        for pair in self.webhook_secrets:
            name, _, secret = pair.partition("=")
            if name.strip() == system and secret.strip():
                return secret.strip()
        return None


_ENV_PREFIX = "SWITCHBOARD_"
_LISTS = frozenset({"allowed_origins", "extra_systems", "webhook_secrets", "webhook_retry_s",
                    "reconcile_auto_repair"})


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
