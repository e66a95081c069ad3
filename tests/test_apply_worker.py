"""The apply worker's start (backend/ingest/consumer.py): its connection is ready before it asks for a
message, so the first events after a start or a reconnect do not wait for the batch's statements to be
prepared and planned (tens of milliseconds for the write, measured under `bench live`)."""

from __future__ import annotations

import asyncio

import asyncpg
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from backend import db
from backend.ingest import apply
from backend.ingest.consumer import ApplyWorker
from backend.live.bus import LiveBus
from backend.routing.rules import DEFAULT_RULES, load_rules
from switchboard.events import SEED_SYSTEMS
from switchboard.waits import stop_tasks
from tests.support.backends import nats_connect
from tests.support.waits import eventually


async def test_the_worker_prepares_its_statements_before_asking_for_a_message(settings, uid):
    # a pool of its own: a connection of the shared one may hold the statements prepared by another test
    pool = await db.create_pool(settings.database.database_owner_url)
    nc = await nats_connect(settings)
    js, stream = nc.jetstream(), f"READY_{uid}"
    await js.add_stream(StreamConfig(name=stream, subjects=[f"r{uid}.events.>"]))
    await js.add_consumer(stream, ConsumerConfig(durable_name="apply", ack_policy=AckPolicy.EXPLICIT))
    worker = ApplyWorker(nc, pool, bus=LiveBus(None), rules=load_rules(DEFAULT_RULES, SEED_SYSTEMS), batch=10,
                         max_bytes=65536, known_systems=SEED_SYSTEMS, stream=stream, durable="apply")
    running = asyncio.create_task(worker.run())
    try:
        async def asking() -> bool:  # its pull request waits at the server: the worker is idle, in `take`
            return (await js.consumer_info(stream, "apply")).num_waiting > 0

        await eventually(asking)
        held = worker._held  # the connection the worker applies every batch on
        assert isinstance(held, asyncpg.Connection)
        prepared = {r["statement"]: (r["generic_plans"], r["custom_plans"]) for r in await held.fetch(
            "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements")}
        # each planned once, generically (the plan every batch reuses), and no message taken yet
        assert [prepared.get(s) for s in (apply._CLAIM, apply._RESOLVE, apply._WRITE)] == [(1, 0)] * 3
        assert worker.handled == 0
    finally:
        await stop_tasks([running])
        await js.delete_stream(stream)
        await nc.close()
        await pool.close()
