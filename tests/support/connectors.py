"""Helpers for the connector tests: a JetStream server of the test's own, and reading what reached
the stream."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
from nats.aio.client import Client as NATS
from nats.errors import TimeoutError as NatsTimeoutError

from backend import messaging
from connectors.sdk import Connector
from switchboard import bus
from switchboard.events import SEED_SYSTEMS, CloudEvent, Event
from tools.embedded import EmbeddedNats

_decode = msgspec.json.Decoder(Event).decode


class Probe(Connector):
    """A connector with nothing upstream: the test emits for it."""

    system = "queue"

    def ticket_called(self, n: int, site: str) -> CloudEvent:
        return self.event("ticket.called", f"T-{n}", {"site": site, "counter": "C1"})


@contextlib.asynccontextmanager
async def own_jetstream(folder: Path) -> AsyncIterator[tuple[EmbeddedNats, NATS]]:
    """An embedded nats-server with the Switchboard streams, that the test may stop and start; `nc` and
    `server.creds` are the backend's."""
    server = EmbeddedNats(folder)
    server.start()
    try:
        nc = await bus.connect(server.url, "test-own-jetstream", creds=server.creds, reconnect_time_wait=0.2)
        await messaging.ensure_streams(nc.jetstream(), 120.0, systems=SEED_SYSTEMS)
        try:
            yield server, nc
        finally:
            await nc.close()
    finally:
        server.stop()


async def stream_messages(nc: NATS, subject: str) -> list[tuple[bytes, dict[str, str]]]:
    """Every message the SVC_EVENTS stream holds on `subject`, in stream order, as (body, headers)."""
    js = nc.jetstream()
    info = await js.stream_info(messaging.EVENTS_STREAM, subjects_filter=subject)
    total = sum((info.state.subjects or {}).values())
    if not total:
        return []
    subscription = await js.subscribe(subject, ordered_consumer=True)
    found: list[tuple[bytes, dict[str, str]]] = []
    try:
        while len(found) < total:
            try:
                msg = await subscription.next_msg(timeout=5)
            except NatsTimeoutError:
                break
            found.append((msg.data, dict(msg.headers or {})))
    finally:
        await subscription.unsubscribe()
    return found


async def stream_events(nc: NATS, subject: str) -> list[CloudEvent]:
    return [_decode(body) for body, _ in await stream_messages(nc, subject)]

