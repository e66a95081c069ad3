"""The inbound webhooks' settings section."""

from __future__ import annotations

import msgspec

from switchboard.webhook_keys import check_webhook_key


class WebhooksSection(msgspec.Struct, frozen=True, kw_only=True):
    # inbound Standard Webhooks: `<system>=<secret>` pairs (secrets as `whsec_<base64>`)
    webhook_secrets: tuple[str, ...] = ()

    def webhook_secret(self, system: str) -> str | None:
        for pair in self.webhook_secrets:
            name, _, secret = pair.partition("=")
            if name.strip() == system and secret.strip():
                return secret.strip()
        return None

    def check(self) -> None:
        """At start: each system's secret a usable key (a malformed one would refuse every webhook)."""
        for pair in self.webhook_secrets:
            name, _, secret = pair.partition("=")
            check_webhook_key(f"SWITCHBOARD_WEBHOOK_SECRETS ({name.strip()})", secret.strip())
