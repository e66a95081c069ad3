"""The outbound webhook connector: signed deliveries, a retry schedule, no loopback or private targets."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import msgspec
import pytest
from standardwebhooks.webhooks import Webhook

from connectors.sdk import Outcome
from connectors.webhook import (
    TargetRefused,
    WebhookConnector,
    WebhookTargetSection,
    check_target,
    create_connector,
)
from switchboard.commands import Command

SECRET = "whsec_" + base64.b64encode(b"fake-outbound-webhook-secret-32b").decode()


class Receiver:
    """A loopback HTTP endpoint answering with the given statuses in turn (the last one repeats)."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.requests: list[tuple[dict[str, str], bytes]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", 0)))
        self.requests.append((headers, body))
        status = self.statuses[min(len(self.requests), len(self.statuses)) - 1]
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()


@pytest.fixture
async def receiver(request) -> AsyncIterator[tuple[Receiver, str]]:
    target = Receiver(request.param)
    server = await asyncio.start_server(target.handle, "127.0.0.1", 0)
    yield target, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hooks"
    server.close()
    await server.wait_closed()


def command() -> Command:
    return Command(id=uuid.uuid4().hex, system="ticketing", command="staff.alert", journey_id=uuid.uuid4(),
                   refs=["ticketing:K-1"], site="north", data={"reason_code": "ELIGIBILITY_FAILED"},
                   created_at=datetime.now(UTC))


async def deliver(url: str, sent: Command, *, allow_private: bool) -> Outcome:
    connector = WebhookConnector(system="ticketing", url=url, secret=SECRET, retry_delays=(0.05, 0.05),
                                 allow_private=allow_private)
    await connector.start()
    try:
        return await connector.handle(sent)
    finally:
        await connector.stop()


@pytest.mark.parametrize("receiver", [[503, 429, 200]], indirect=True)
async def test_a_command_is_delivered_signed_and_retried_until_accepted(receiver):
    target, url = receiver
    sent = command()
    outcome = await deliver(url, sent, allow_private=True)
    assert outcome.status == "ok"
    assert len(target.requests) == 3
    assert {headers["webhook-id"] for headers, _ in target.requests} == {sent.id}  # one id across retries
    headers, body = target.requests[-1]
    Webhook(SECRET).verify(body, headers)  # raises if the signature does not hold
    assert msgspec.json.decode(body, type=Command) == sent


@pytest.mark.parametrize("receiver", [[400]], indirect=True)
async def test_a_client_error_fails_at_once(receiver):
    target, url = receiver
    outcome = await deliver(url, command(), allow_private=True)
    assert (outcome.status, outcome.error, len(target.requests)) == ("failed", "HTTP 400", 1)


@pytest.mark.parametrize("receiver", [[500]], indirect=True)
async def test_a_target_failing_through_the_schedule_is_a_failure(receiver):
    target, url = receiver
    outcome = await deliver(url, command(), allow_private=True)
    assert outcome.status == "failed" and len(target.requests) == 3


@pytest.mark.parametrize("receiver", [[200]], indirect=True)
async def test_a_loopback_target_is_refused_unless_allowed(receiver):
    target, url = receiver
    outcome = await deliver(url, command(), allow_private=False)
    assert outcome.status == "failed" and outcome.error is not None and "target refused" in outcome.error
    assert target.requests == []


@pytest.mark.parametrize("url", ["http://10.1.2.3/x", "http://169.254.169.254/latest", "http://[::1]:9/x",
                                 "http://192.168.0.10/x", "ftp://example.org/x", "http://100.64.0.1/x",
                                 # the same places spelled otherwise, and what is no HTTP server at all
                                 "http://localhost/x", "http://127.1/x", "http://2130706433/x", "http://0x7f.1/x",
                                 "http://0177.0.0.1/x", "http://0.0.0.0/x", "http://[::]/x",
                                 "http://[::ffff:127.0.0.1]/x", "https://[::ffff:10.0.0.1]:8443/",
                                 "http://[fd00::1]/x", "http://[fe80::1]/x", "http://fake:fake@127.0.0.1/x",
                                 "http://224.0.0.1/x", "file:///etc/passwd", "gopher://127.0.0.1/",
                                 # IPv6 forms a gateway turns into IPv4: NAT64, 6to4, IPv4-compatible
                                 "http://[64:ff9b::a00:1]/x", "http://[64:ff9b:1::a00:1]/x",
                                 "http://[2002:a00:1::]/x", "http://[::127.0.0.1]/x",
                                 "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/x"])
async def test_private_link_local_and_non_http_targets_are_refused(url):
    with pytest.raises(TargetRefused):
        await check_target(url, allow_private=False)


@pytest.mark.parametrize("url", ["https://93.184.216.34/hooks",
                                 # a public IPv4 address through NAT64 and 6to4, as DNS64 answers on IPv6-only
                                 "https://[64:ff9b::5db8:d822]/hooks", "https://[2002:5db8:d822::1]/hooks"])
async def test_a_public_address_is_allowed(url):
    # typed as answering something: mypy refuses to use the value of a call typed `-> None`
    allowed: Callable[..., Awaitable[object]] = check_target
    assert await allowed(url, allow_private=False) is None


def test_the_webhook_connector_refuses_to_start_with_a_key_anyone_could_guess():
    two_bytes = "whsec_" + base64.b64encode(b"ab").decode()
    target = WebhookTargetSection(webhook_target_url="https://hooks.example.org/in",
                                  webhook_target_secret=two_bytes)
    with pytest.raises(SystemExit, match="SWITCHBOARD_WEBHOOK_TARGET_SECRET is a key of 2 bytes"):
        create_connector(target)
    usable = msgspec.structs.replace(target, webhook_target_secret=SECRET)
    assert create_connector(usable).url == "https://hooks.example.org/in"


async def test_a_target_that_went_away_is_down_until_it_takes_connections_again():
    """While the system is down its commands are held, so no delivery would find it back: the heartbeat's
    own check does."""
    server = await asyncio.start_server(Receiver([200]).handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    connector = WebhookConnector(system="ticketing", url=f"http://127.0.0.1:{port}/hooks", secret=SECRET,
                                 retry_delays=(0.05,), allow_private=True)
    await connector.start()
    try:
        assert (await connector.handle(command())).status == "unavailable"
        assert await connector.upstream_status() == "down"
        back = Receiver([200])
        server = await asyncio.start_server(back.handle, "127.0.0.1", port)
        assert await connector.upstream_status() == "up"
        assert back.requests == []  # found back by a connection, not a request
        assert (await connector.handle(command())).status == "ok"
    finally:
        await connector.stop()
        server.close()
        await server.wait_closed()
