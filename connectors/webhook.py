"""Outbound webhooks: a connector that delivers its system's commands to a URL as signed Standard Webhooks.

For an upstream that cannot consume NATS: each command is POSTed as JSON with `webhook-id` (the
command id, the same on every retry so the receiver can drop repeats), `webhook-timestamp` and
`webhook-signature`. A 2xx is `ok`; 408, 429, 5xx and unreachable are retried on a schedule; any
other status fails at once. Loopback, private, link-local and reserved targets are refused unless
`SWITCHBOARD_WEBHOOK_ALLOW_PRIVATE` is set: a misconfigured target must not turn Switchboard into
a way into the internal network. The address is checked before every delivery.

    SWITCHBOARD_WEBHOOK_SYSTEM=ticketing SWITCHBOARD_WEBHOOK_TARGET_URL=https://… \\
    SWITCHBOARD_WEBHOOK_TARGET_SECRET=whsec_… switchboard connector run connectors.webhook
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
import msgspec
from standardwebhooks.webhooks import Webhook

from connectors.sdk import OK, Connector, Outcome
from switchboard.commands import V1_COMMANDS, Command
from switchboard.events import Upstream
from switchboard.settings import load_section
from switchboard.webhook_keys import check_webhook_key
from switchboard.webhook_targets import TargetRefused, check_target

REQUEST_TIMEOUT = 10.0
# within a heartbeat's own time (5 s): a host dropping connections must not make the connector miss it
_PROBE_TIMEOUT = 3.0
RETRYABLE = frozenset({408, 429})


class WebhookTargetSection(msgspec.Struct, frozen=True, kw_only=True):
    # commands for `webhook_system`, signed with the target secret (`whsec_…`), to this URL
    webhook_target_url: str | None = None
    webhook_target_secret: str | None = None
    webhook_system: str = "webhook"
    webhook_retry_s: tuple[str, ...] = ("1", "5", "30")  # waits between delivery attempts
    webhook_allow_private: bool = False  # allow loopback and private targets (local development only)


class WebhookConnector(Connector):
    commands = V1_COMMANDS

    def __init__(self, *, system: str, url: str, secret: str,
                 retry_delays: tuple[float, ...] = (1.0, 5.0, 30.0), allow_private: bool = False) -> None:
        super().__init__("webhook")
        self.system = system  # type: ignore[misc]  # one class serves any system it is configured for
        self.url = url
        self.signer = Webhook(secret)
        self.retry_delays = retry_delays
        self.allow_private = allow_private
        self.handle_timeout = sum(retry_delays) + (len(retry_delays) + 1) * REQUEST_TIMEOUT + 5
        self.deliveries = 0
        self._reachable = True
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=REQUEST_TIMEOUT, follow_redirects=False)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def upstream_status(self) -> Upstream:
        # down until the target takes a connection again: only a delivery would say so otherwise, and none
        # comes while the system is down (its commands are held)
        if not self._reachable:
            self._reachable = await self._accepts_connections()
        return "up" if self._reachable else "down"

    async def _accepts_connections(self) -> bool:
        """Whether the target's host takes a TCP connection (no request is sent; a proxy, where one is
        required, is not asked)."""
        try:
            await check_target(self.url, allow_private=self.allow_private)
            parts = urlsplit(self.url)
            async with asyncio.timeout(_PROBE_TIMEOUT):
                _, writer = await asyncio.open_connection(
                    parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
            writer.close()
            await writer.wait_closed()
        except (OSError, TimeoutError, TargetRefused):
            return False
        return True

    async def handle(self, command: Command) -> Outcome:
        assert self._client is not None
        body = msgspec.json.encode(command)
        last = "not attempted"
        for delay in (0.0, *self.retry_delays):
            await asyncio.sleep(delay)
            try:
                await check_target(self.url, allow_private=self.allow_private)
            except TargetRefused as exc:
                return Outcome("failed", f"target refused: {exc}")
            now = datetime.now(UTC)
            headers = {"content-type": "application/json", "webhook-id": command.id,
                       "webhook-timestamp": str(int(now.timestamp())),
                       "webhook-signature": self.signer.sign(command.id, now, body.decode())}
            self.deliveries += 1
            try:
                response = await self._client.post(self.url, content=body, headers=headers)
            except httpx.TransportError as exc:
                self._reachable, last = False, f"unreachable {type(exc).__name__}"
                continue
            self._reachable = True
            if response.is_success:
                return OK
            last = f"HTTP {response.status_code}"
            if response.status_code not in RETRYABLE and response.status_code < 500:
                return Outcome("failed", last)
        # never reached: the system is down and its commands are held; reached but failing: a failure
        return Outcome("unavailable" if not self._reachable else "failed", f"gave up after retries: {last}")


def create_connector(settings: WebhookTargetSection | None = None) -> WebhookConnector:
    settings = settings or load_section(WebhookTargetSection)
    if not (settings.webhook_target_url and settings.webhook_target_secret):
        raise SystemExit("set SWITCHBOARD_WEBHOOK_TARGET_URL and SWITCHBOARD_WEBHOOK_TARGET_SECRET")
    try:
        check_webhook_key("SWITCHBOARD_WEBHOOK_TARGET_SECRET", settings.webhook_target_secret)
    except ValueError as exc:
        raise SystemExit(str(exc)) from exc
    return WebhookConnector(system=settings.webhook_system, url=settings.webhook_target_url,
                            secret=settings.webhook_target_secret,
                            retry_delays=tuple(float(s) for s in settings.webhook_retry_s),
                            allow_private=settings.webhook_allow_private)
