"""NATS JetStream: the streams and the shared durable consumer (CONTRACT section 1)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import nats
import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError

EVENTS_STREAM = "SVC_EVENTS"
COMMANDS_STREAM = "SVC_COMMANDS"
APPLY_CONSUMER = "switchboard-apply"

log = logging.getLogger(__name__)


async def connect(url: str, name: str) -> NATS:
    """A client that reconnects for ever, logging the outage once rather than every failed attempt.

    `url` may list several servers of a cluster, comma-separated.
    """

    async def on_error(exc: Exception) -> None:
        quiet = isinstance(exc, OSError | nats.errors.StaleConnectionError | nats.errors.UnexpectedEOF)
        log.log(logging.DEBUG if quiet else logging.WARNING, "nats (%s): %s", name, exc or type(exc).__name__)

    async def on_disconnected() -> None:
        if not client.is_closed:
            log.warning("nats (%s): disconnected; reconnecting", name)

    async def on_reconnected() -> None:
        log.warning("nats (%s): reconnected", name)

    client = NATS()
    await client.connect([u.strip() for u in url.split(",")], name=name, max_reconnect_attempts=-1,
                         reconnect_time_wait=0.5,  # type: ignore[arg-type]  # nats-py sleeps it: any number of s
                         error_cb=on_error, disconnected_cb=on_disconnected, reconnected_cb=on_reconnected)
    return client


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.add_stream(config)
    except BadRequestError:
        # exists with another configuration (an older release's): bring it to ours
        await js.update_stream(config)


async def ensure_streams(js: JetStreamContext, duplicate_window_s: float, replicas: int = 1,
                         wait_s: float = 60.0) -> None:
    """Create or update the streams and the apply consumer; idempotent across concurrent backends.

    `replicas` is JetStream's copies of each stream: 3 on a three-node cluster survives losing a node.
    A cluster that is still electing its leader answers late: keep asking for up to `wait_s`.
    """
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        try:
            return await _ensure_all(js, duplicate_window_s, replicas)
        except (nats.errors.TimeoutError, ServiceUnavailableError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("JetStream is not answering yet; retrying")
            await asyncio.sleep(0.5)


async def _ensure_all(js: JetStreamContext, duplicate_window_s: float, replicas: int) -> None:
    await _ensure_stream(js, StreamConfig(
        name=EVENTS_STREAM, subjects=["svc.events.>"], storage=StorageType.FILE,
        duplicate_window=duplicate_window_s, num_replicas=replicas,
    ))
    await _ensure_stream(js, StreamConfig(
        name=COMMANDS_STREAM, subjects=["svc.commands.>"], storage=StorageType.FILE,
        duplicate_window=duplicate_window_s, num_replicas=replicas,
    ))
    await js.add_consumer(EVENTS_STREAM, ConsumerConfig(
        durable_name=APPLY_CONSUMER, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
        filter_subject="svc.events.>", ack_wait=10, max_ack_pending=50_000,
    ))


async def recreate_streams(js: JetStreamContext, duplicate_window_s: float = 120.0) -> None:
    """Delete the streams and create them empty: for test sessions and benchmarks, never a deployment."""
    for stream in (EVENTS_STREAM, COMMANDS_STREAM):
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(stream)
    await ensure_streams(js, duplicate_window_s)
