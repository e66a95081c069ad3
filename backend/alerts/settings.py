"""The alerts' settings section (`SWITCHBOARD_ALERT_*`)."""

from __future__ import annotations

import msgspec

from switchboard.webhook_keys import check_webhook_key
from switchboard.webhook_targets import TargetRefused, checked_url


class AlertsSection(msgspec.Struct, frozen=True, kw_only=True):
    # the rules (TOML, backend/alerts/rules.py); unset: the default rules there
    alert_rules_file: str = ""
    # every replica evaluates the rules this often; the database keeps each alert raised once
    alert_check_interval_s: float = 15.0
    # Standard Webhooks receivers of every raised and resolved alert, and the secret (`whsec_…`) signing them
    alert_webhooks: tuple[str, ...] = ()
    alert_webhook_secret: str | None = None
    # waits between delivery attempts; after the last one the delivery is `failed`
    alert_webhook_retry_s: tuple[str, ...] = ("1", "5", "30", "120", "600")
    alert_webhook_allow_private: bool = False  # loopback and private receivers (local development only)
    alert_delivery_interval_s: float = 1.0  # how often the queue of deliveries is looked at when idle
    retention_alerts_days: float = 400.0  # resolved alerts, with their deliveries


def check_alert_webhooks(section: AlertsSection) -> None:
    """At start: receivers need a usable signing secret (a `whsec_` base64 key, as Standard Webhooks has)."""
    if not section.alert_webhooks:
        return
    if not section.alert_webhook_secret:
        raise ValueError("SWITCHBOARD_ALERT_WEBHOOKS needs SWITCHBOARD_ALERT_WEBHOOK_SECRET (whsec_…)")
    check_webhook_key("SWITCHBOARD_ALERT_WEBHOOK_SECRET", section.alert_webhook_secret)
    for n, url in enumerate(section.alert_webhooks, start=1):
        try:
            checked_url(url)
        except TargetRefused as exc:  # the receiver by position, not quoted: its URL may hold its credential
            raise ValueError(f"SWITCHBOARD_ALERT_WEBHOOKS: receiver {n}: {exc}") from exc
