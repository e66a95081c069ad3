"""The alerts' settings section (`SWITCHBOARD_ALERT_*`)."""

from __future__ import annotations

from urllib.parse import urlsplit

import msgspec

from switchboard.webhook_keys import check_webhook_key


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
            parts = urlsplit(url)
            usable = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
        except ValueError:  # a port out of range
            usable = False
        if not usable:  # not quoted: a receiver's URL may hold its credential
            raise ValueError(f"SWITCHBOARD_ALERT_WEBHOOKS: receiver {n} is not an http(s) URL with a host and"
                             " a port from 1 to 65535")
