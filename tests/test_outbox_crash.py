"""The relay: a backend that dies between the commit of a command and its publication neither loses nor
doubles it, and one site's waiting commands hold up no other site's.

These tests run in a world of their own (a fresh database and a fresh NATS server) so that no other
backend of the session relays their commands and the stream holds only what they publish.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import msgspec
import nats
import pytest

from backend import db, messaging
from backend.commands.relay import CommandRelay, DeliveryPolicy
from backend.ingest.apply import apply_events
from backend.ingest.validate import Accepted, validate
from backend.integrations.config import IntegrationsSection
from backend.integrations.pace import PacePolicy
from backend.live.bus import LiveBus
from backend.routing.rules import DEFAULT_RULES, load_rules
from backend.settings import BackendSettings
from switchboard import bus
from switchboard.commands import Command
from switchboard.events import RESERVED_SYSTEMS, SEED_SYSTEMS
from tests.support.backends import JWT_SECRET, nats_connect, start_backend
from tests.support.connector_double import ConnectorDouble
from tests.support.events import phone_booking, publish
from tests.support.settings import backend_settings
from tests.support.waits import eventually
from tools.embedded import embedded_servers


@pytest.fixture
def world_dir(workdir: Path) -> Path:
    return workdir / f"world-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def world(server_urls: dict[str, str], world_dir: Path) -> AsyncIterator[BackendSettings]:
    name = f"switchboard_crash_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_urls["database_url"])
    await admin.execute(f'CREATE DATABASE "{name}"')
    database_url = server_urls["database_url"].rsplit("/", 1)[0] + "/" + name
    conn = await asyncpg.connect(database_url)
    await db.migrate(conn)
    await conn.close()
    with embedded_servers(world_dir / "servers", postgres=False, nats=True) as urls:
        nc = await bus.connect(urls["nats_url"], "test-setup", creds=urls.get("nats_creds"))
        await messaging.ensure_streams(nc.jetstream(), 120.0)
        await nc.close()
        yield backend_settings(database_url=database_url, nats_url=urls["nats_url"], jwt_secret=JWT_SECRET,
                               data_dir=str(world_dir / "data"), nats_creds=urls.get("nats_creds"))
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def _stream_messages(js: nats.js.JetStreamContext) -> list[tuple[str, Command]]:
    count = (await js.stream_info(messaging.COMMANDS_STREAM)).state.messages
    messages = [await js.get_msg(messaging.COMMANDS_STREAM, seq=n) for n in range(1, count + 1)]
    found = []
    for m in messages:
        assert m.headers is not None and m.data is not None
        found.append((m.headers["Nats-Msg-Id"], msgspec.json.decode(m.data, type=Command)))
    return found


async def test_a_backend_killed_after_commit_and_before_publish_loses_nothing_and_doubles_nothing(world,
                                                                                                 world_dir):
    site = f"site-{uuid.uuid4().hex[:8]}"
    nc = await nats_connect(world)
    js = nc.jetstream()
    pool = await db.create_pool(world.database.database_url)
    # a relay that would only publish an hour from now: the command stays committed but unpublished
    doomed = start_backend(world, world_dir / "doomed.log", {"SWITCHBOARD_COMMAND_RELAY_INTERVAL_S": "3600"})
    survivor = None
    try:
        await publish(js, phone_booking(f"appointments:A-{site}", site))
        command_id = await eventually(lambda: pool.fetchval("SELECT id FROM commands WHERE site = $1", site))
        assert doomed.process is not None
        os.kill(doomed.process.pid, signal.SIGKILL)
        assert doomed.process.wait(timeout=10) == -signal.SIGKILL
        assert await pool.fetchval("SELECT status FROM commands WHERE id = $1", command_id) == "pending"
        assert await _stream_messages(js) == []

        async with ConnectorDouble(nc, "queue", site, lambda _: "ok") as queue:
            # started in a thread: the connector answers while the backend starts
            survivor = await asyncio.to_thread(start_backend, world, world_dir / "survivor.log")
            await eventually(lambda: pool.fetchval("SELECT status = 'ok' FROM commands WHERE id = $1",
                                                   command_id))
        [(message_id, command)] = await _stream_messages(js)
        assert message_id == str(command_id)
        assert (command.id, command.attempt, command.command, command.site) == \
            (str(command_id), 1, "visit.context", site)
        assert [c.id for c in queue.received] == [str(command_id)]
    finally:
        doomed.stop()
        if survivor is not None:
            survivor.stop()
        await pool.close()
        await nc.close()


async def test_a_relay_dying_after_publish_and_before_commit_publishes_the_same_attempt_once(world):
    site = f"site-{uuid.uuid4().hex[:8]}"
    nc = await nats_connect(world)
    js = nc.jetstream()
    pool = await db.create_pool(world.database.database_url)
    relay = CommandRelay(pool, js, LiveBus(nc),
                         DeliveryPolicy(answer_timeout_s=30, backoff_s=1, backoff_max_s=1, max_attempts=3),
                         PacePolicy.from_section(IntegrationsSection()), interval_s=1,
                         heartbeat_interval_s=15)
    try:
        booking = validate(msgspec.json.encode(phone_booking(f"appointments:A-{site}", site)),
                           max_bytes=65536, known_systems=SEED_SYSTEMS | RESERVED_SYSTEMS)
        assert isinstance(booking, Accepted)
        async with pool.acquire() as conn, conn.transaction():
            await apply_events(conn, [booking], rules=load_rules(DEFAULT_RULES, SEED_SYSTEMS))
        command_id = await pool.fetchval("SELECT id FROM commands WHERE site = $1", site)

        async with pool.acquire() as conn:
            dying = conn.transaction()
            await dying.start()
            assert await relay.publish_due(conn, "queue") == 1
            await dying.rollback()  # as if the process died before its commit
        row = await pool.fetchrow("SELECT status, attempts FROM commands WHERE id = $1", command_id)
        assert (row["status"], row["attempts"]) == ("pending", 0)

        async with pool.acquire() as conn, conn.transaction():
            assert await relay.publish_due(conn, "queue") == 1
        row = await pool.fetchrow("SELECT status, attempts FROM commands WHERE id = $1", command_id)
        assert (row["status"], row["attempts"]) == ("sent", 1)
        [(message_id, command)] = await _stream_messages(js)  # JetStream dropped the second copy
        assert (message_id, command.attempt) == (str(command_id), 1)
    finally:
        await pool.close()
        await nc.close()


async def test_one_site_s_waiting_commands_hold_up_no_other_site_s(world):
    """While a system recovers, a site's staff commands wait for its open counters (two a counter a minute).
    A window of due commands full of them held every later site's commands back until they drained."""
    busy, other = f"busy-{uuid.uuid4().hex[:8]}", f"other-{uuid.uuid4().hex[:8]}"
    nc = await nats_connect(world)
    pool = await db.create_pool(world.database.database_url)
    relay = CommandRelay(pool, nc.jetstream(), LiveBus(nc),
                         DeliveryPolicy(answer_timeout_s=30, backoff_s=1, backoff_max_s=1, max_attempts=3),
                         PacePolicy.from_section(IntegrationsSection()), interval_s=1,
                         heartbeat_interval_s=15, batch=3)
    try:
        await pool.execute("INSERT INTO command_pace (system, rate_per_min, tokens, reason)"
                           " VALUES ('queue', 600, 20, 'recovering: back after an outage')")
        await pool.execute("INSERT INTO capacity VALUES ($1, 1, 1, 1, 9, '0', now())", busy)
        ids = [uuid.uuid4() for _ in range(6)]
        await pool.executemany(
            "INSERT INTO commands (id, rule, system, command, journey_id, refs, site, data)"
            " VALUES ($1, 'test', 'queue', 'staff.alert', $2, '{}', $3, '{}')",
            [(command_id, uuid.uuid4(), busy if n < 5 else other) for n, command_id in enumerate(ids)])
        async with pool.acquire() as conn, conn.transaction():
            assert await relay.publish_due(conn, "queue") == 3
        sent = {r["id"] for r in await pool.fetch("SELECT id FROM commands WHERE status = 'sent'")}
        assert sent == {ids[0], ids[1], ids[5]}  # the busy site's first two, and the other site's
    finally:
        await pool.close()
        await nc.close()
