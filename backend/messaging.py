"""NATS JetStream: the streams and the shared durable consumer (CONTRACT section 1)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError

from switchboard import bus
from switchboard.commands import COMMANDS_STREAM, PER_SITE_METADATA, commands_to, consumer_name

EVENTS_STREAM = "SVC_EVENTS"
APPLY_CONSUMER = "switchboard-apply"

log = logging.getLogger(__name__)


class StreamsSection(msgspec.Struct, frozen=True, kw_only=True):
    # JetStream's duplicate window; Postgres keeps idempotency beyond it.
    duplicate_window_s: float = 120.0
    # copies JetStream keeps of each stream: 3 on a three-node cluster
    stream_replicas: int = 1
    # how long JetStream keeps each message (both streams): the apply worker needs minutes, an outage of the
    # database a few days at most; past that a raw message (which may carry what validation refuses) is gone
    stream_max_age_s: float = 7 * 24 * 3600.0


async def connect(url: str, name: str, creds: str | None = None, *, tls_ca: str | None = None,
                  echo: bool = True, on_reconnected: Callable[[], None] | None = None) -> NATS:
    """A client that reconnects for ever with the process's credentials file (SWITCHBOARD_NATS_CREDS) and
    the servers' authority (SWITCHBOARD_NATS_TLS_CA); `echo` False: what it publishes is never delivered to
    its own subscriptions."""
    return await bus.connect(url, name, creds=creds, tls_ca=tls_ca, no_echo=not echo,
                             on_reconnected=on_reconnected)


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.add_stream(config)
    except BadRequestError:
        # exists with another configuration (an older release's): bring it to ours
        await js.update_stream(config)


async def ensure_streams(js: JetStreamContext, duplicate_window_s: float, replicas: int = 1,
                         wait_s: float = 60.0, systems: Iterable[str] = (),
                         max_age_s: float = 7 * 24 * 3600.0, per_site: frozenset[str] = frozenset()) -> None:
    """Create or update the streams, the apply consumer and each system's command consumer; idempotent
    across concurrent backends. Connectors may not create consumers (CONTRACT section 8): the backend
    makes one for every system it may send commands to.

    `replicas` is JetStream's copies of each stream: 3 on a three-node cluster survives losing a node.
    `max_age_s` bounds how long a message is kept (`SWITCHBOARD_STREAM_MAX_AGE_S`): nothing raw stays for
    ever. The systems in `per_site` are commanded per site: their consumer says so, and the relay makes one
    per site as their commands come (`site_command_consumer`). A cluster that is still electing its leader
    answers late: keep asking for up to `wait_s`.
    """
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        try:
            return await _ensure_all(js, duplicate_window_s, replicas, max_age_s, sorted(set(systems)),
                                     per_site)
        except (nats.errors.TimeoutError, ServiceUnavailableError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("JetStream is not answering yet; retrying")
            await asyncio.sleep(0.5)


async def _ensure_all(js: JetStreamContext, duplicate_window_s: float, replicas: int, max_age_s: float,
                      systems: list[str], per_site: frozenset[str]) -> None:
    await _ensure_stream(js, StreamConfig(
        name=EVENTS_STREAM, subjects=["svc.events.>"], storage=StorageType.FILE,
        duplicate_window=duplicate_window_s, num_replicas=replicas, max_age=max_age_s,
    ))
    await _ensure_stream(js, StreamConfig(
        name=COMMANDS_STREAM, subjects=["svc.commands.>"], storage=StorageType.FILE,
        duplicate_window=duplicate_window_s, num_replicas=replicas, max_age=max_age_s,
    ))
    await js.add_consumer(EVENTS_STREAM, ConsumerConfig(
        durable_name=APPLY_CONSUMER, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
        filter_subject="svc.events.>", ack_wait=10, max_ack_pending=50_000,
    ))
    for system in systems:
        await js.add_consumer(COMMANDS_STREAM, command_consumer(system, per_site=system in per_site))


def command_consumer(system: str, *, per_site: bool = False) -> ConsumerConfig:
    """The durable pull consumer a system's connectors read its commands from; a command whose handling
    outlasts `ack_wait` (the SDK's handle timeout is 10 s, and it marks each command in progress) is
    redelivered. Its metadata says whether the system is commanded per site (the SDK then asks for its sites'
    consumers every second, and a connector not limited to sites says it will get no command)."""
    return ConsumerConfig(durable_name=consumer_name(system), filter_subject=f"svc.commands.{system}.>",
                          ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL, ack_wait=30,
                          max_ack_pending=1000, metadata=PER_SITE_METADATA if per_site else {})


def site_command_consumer(system: str, site: str) -> ConsumerConfig:
    """The durable pull consumer of one site's commands of a system commanded per site: only the system's
    connectors limited to that site may read it (switchboard/natsauth.py)."""
    # made before the site's first command: a consumer made again (deleted meanwhile) must not deliver
    # again what the stream still holds, answered or given up long ago; what was unanswered is sent again
    return ConsumerConfig(durable_name=consumer_name(system, site),
                          filter_subject=f"svc.commands.{commands_to(system, site)}.>",
                          ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.NEW, ack_wait=30,
                          max_ack_pending=1000)


async def recreate_streams(js: JetStreamContext, duplicate_window_s: float = 120.0,
                           systems: Iterable[str] = ()) -> None:
    """Delete the streams and create them empty: for test sessions and benchmarks, never a deployment."""
    for stream in (EVENTS_STREAM, COMMANDS_STREAM):
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(stream)
    await ensure_streams(js, duplicate_window_s, systems=systems)
