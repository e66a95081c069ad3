"""`switchboard bench ingest`: Switchboard's apply rate against a bare consumer, same events, same run.

The bare consumer is the floor any design pays here: fetch from JetStream in batches, decode the
JSON, insert the rows with one batched asyncpg statement, commit, ack. Switchboard does that plus
validation, personal-data checks, locking, the journey merge and capacity/heartbeat upserts.
Both run with `synchronous_commit` on.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
import nats
import uvloop
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

from backend import db
from backend.ingest.consumer import ApplyWorker
from switchboard.bench.common import Meter, bench_servers, progress, report, scratch_database
from switchboard.events import RESERVED_SYSTEMS, SEED_SYSTEMS

STREAM = "BENCH_EVENTS"
PREFIX = "bench.events"


def make_events(total: int, seed: int = 7, prefix: str = PREFIX) -> list[tuple[str, bytes, str]]:
    """`(subject, body, msg_id)` for journeys of six events each across 20 sites, plus capacity updates."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 5, 8, tzinfo=UTC)
    out: list[tuple[str, bytes, str]] = []

    def add(system: str, type_: str, subject: str, at: datetime, data: dict[str, object]) -> None:
        event = {"specversion": "1.0", "id": uuid.UUID(int=rng.getrandbits(128)).hex, "source": f"/{system}",
                 "type": type_, "subject": subject, "time": at.isoformat(), "data": data}
        out.append((f"{prefix}.{system}.{type_}", msgspec.json.encode(event), f"/{system} {event['id']}"))

    n = 0
    while len(out) < total:
        n += 1
        site = f"site-{n % 20:02d}"
        at = start + timedelta(seconds=n)
        appt, ticket = f"appointments:A-{n}", f"queue:T-{n}"
        add("appointments", "appointment.booked", appt, at,
            {"site": site, "service": "passport", "channel": "web", "slot_start": (at + timedelta(hours=2)).isoformat()})
        add("queue", "customer.arrived", ticket, at + timedelta(minutes=100), {"site": site, "links": [appt]})
        add("queue", "ticket.issued", ticket, at + timedelta(minutes=101),
            {"site": site, "ticket": f"T-{n}", "queue_name": "main"})
        add("queue", "ticket.called", ticket, at + timedelta(minutes=110), {"site": site, "counter": "C1"})
        add("queue", "service.started", ticket, at + timedelta(minutes=111), {"site": site, "counter": "C1"})
        add("queue", "service.completed", ticket, at + timedelta(minutes=120), {"site": site, "outcome": "DONE"})
        if n % 10 == 0:
            add("queue", "capacity.changed", f"site:{site}", at,
                {"site": site, "counters_open": 6, "counters_busy": rng.randint(0, 6), "staff_on_duty": 7,
                 "queue_length": rng.randint(0, 30)})
    return out[:total]


async def _load(js: JetStreamContext, events: list[tuple[str, bytes, str]]) -> None:
    meter = Meter("loading the stream", len(events))
    in_flight: set[asyncio.Future[object]] = set()
    for done, (subject, body, msg_id) in enumerate(events, 1):
        in_flight.add(asyncio.ensure_future(js.publish(subject, body, headers={"Nats-Msg-Id": msg_id})))
        if len(in_flight) >= 2000:
            finished, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            for f in finished:
                f.result()
        if done % 5000 == 0:
            meter.update(done)
    await asyncio.gather(*in_flight)
    meter.update(len(events))


async def _consumer(js: JetStreamContext, durable: str) -> None:
    await js.add_consumer(STREAM, ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT,
                                                 ack_wait=60, max_ack_pending=50_000))


async def _bare(js: JetStreamContext, database_url: str, total: int, batch: int) -> float:
    conn = await asyncpg.connect(database_url)
    await conn.execute("CREATE TABLE bare_events (source text, id text, type text, subject text, time timestamptz,"
                       " data jsonb, PRIMARY KEY (source, id))")
    await _consumer(js, "bench-bare")
    sub = await js.pull_subscribe_bind(durable="bench-bare", stream=STREAM)
    meter, done = Meter("bare consumer", total), 0
    while done < total:
        msgs = await sub.fetch(batch, timeout=5)
        docs = [msgspec.json.decode(m.data) for m in msgs]
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO bare_events SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],"
                " $5::timestamptz[], $6::jsonb[]) ON CONFLICT DO NOTHING",
                [d["source"] for d in docs], [d["id"] for d in docs], [d["type"] for d in docs],
                [d["subject"] for d in docs], [datetime.fromisoformat(d["time"]) for d in docs],
                [msgspec.json.encode(d["data"]).decode() for d in docs],
            )
        for m in msgs:
            await m.ack()
        done += len(msgs)
        meter.update(done)
    await conn.close()
    return total / meter.elapsed()


async def _switchboard(js: JetStreamContext, database_url: str, total: int, batch: int) -> tuple[float, int]:
    pool = await db.create_pool(database_url)
    async with pool.acquire() as conn:
        await db.migrate(conn)
    await _consumer(js, "bench-apply")
    worker = ApplyWorker(js, pool, batch=batch, max_bytes=64 * 1024, known_systems=SEED_SYSTEMS | RESERVED_SYSTEMS,
                         stream=STREAM, durable="bench-apply")
    meter = Meter("switchboard apply", total)
    task = asyncio.create_task(worker.run())
    while worker.handled < total:
        await asyncio.sleep(0.05)
        meter.update(worker.handled)
        if task.done():
            task.result()
    rate = total / meter.elapsed()
    task.cancel()
    async with pool.acquire() as conn:
        applied = await conn.fetchval("SELECT count(*) FROM events")
        journeys = await conn.fetchval("SELECT count(*) FROM journeys")
    await pool.close()
    if applied != total:
        raise SystemExit(f"switchboard applied {applied} of {total} events")
    return rate, journeys


async def _run(urls: dict[str, str], total: int, batch: int) -> dict[str, object]:
    nc = await nats.connect(urls["nats_url"])
    js = nc.jetstream()
    try:
        await js.delete_stream(STREAM)
    except nats.js.errors.NotFoundError:
        pass
    await js.add_stream(StreamConfig(name=STREAM, subjects=[f"{PREFIX}.>"], storage=StorageType.FILE,
                                     duplicate_window=120))
    try:
        progress(f"generating {total:,} events")
        await _load(js, make_events(total))
        async with scratch_database(urls["database_url"], "bare") as bare_url:
            baseline = await _bare(js, bare_url, total, batch)
        async with scratch_database(urls["database_url"], "apply") as apply_url:
            rate, journeys = await _switchboard(js, apply_url, total, batch)
    finally:
        await js.delete_stream(STREAM)
        await nc.close()
    return {"events": total, "batch": batch, "journeys": journeys, "events_per_s": round(rate),
            "baseline_events_per_s": round(baseline), "ratio": round(rate / baseline, 3)}


def run_ingest_bench(*, events: int, batch: int) -> None:
    print(f"bench ingest: {events:,} events, batches of {batch}", flush=True)
    with bench_servers() as urls:
        # uvloop, as under uvicorn: the backend's loop, and the same one for both sides
        figures = uvloop.run(_run(urls, events, batch))
    print(f"switchboard {figures['events_per_s']:,} events/s, bare consumer {figures['baseline_events_per_s']:,}"
          f" events/s, ratio {figures['ratio']}", flush=True)
    report(figures)
