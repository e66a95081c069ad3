"""`switchboard bench ingest`: the backend's apply rate against a bare consumer, same events, same run.

The bare consumer is the floor any design pays here: fetch from JetStream in batches, decode the
JSON, insert the rows with one batched asyncpg statement, commit, ack. The backend does that plus
validation, personal-data checks, locking, the journey merge, routing rules and the outbox. Both run
with `synchronous_commit` on. The backend side is real `switchboard backend` processes, measured
from the first applied event to the last, so start-up is not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import msgspec
import nats
import uvloop
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from backend import db, messaging
from tools.backend_process import BackendProcess
from tools.bench.common import Meter, bench_servers, progress, report, scratch_database

PREFIX = "svc.events"


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
            {"site": site, "service": "passport", "channel": "web",
             "slot_start": (at + timedelta(hours=2)).isoformat()})
        add("queue", "customer.arrived", ticket, at + timedelta(minutes=100), {"site": site, "links": [appt]})
        add("queue", "ticket.issued", ticket, at + timedelta(minutes=101),
            {"site": site, "ticket": f"T-{n}", "queue_name": "main"})
        add("queue", "ticket.called", ticket, at + timedelta(minutes=110), {"site": site, "counter": "C1"})
        add("queue", "service.started", ticket, at + timedelta(minutes=111), {"site": site, "counter": "C1"})
        add("queue", "service.completed", ticket, at + timedelta(minutes=120),
            {"site": site, "outcome": "DONE"})
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


async def _bare(js: JetStreamContext, database_url: str, total: int, batch: int) -> float:
    conn = await asyncpg.connect(database_url)
    await conn.execute("CREATE TABLE bare_events (source text, id text, type text, subject text, time"
                       " timestamptz, data jsonb, PRIMARY KEY (source, id))")
    await js.add_consumer(messaging.EVENTS_STREAM, ConsumerConfig(
        durable_name="bench-bare", ack_policy=AckPolicy.EXPLICIT, ack_wait=60, max_ack_pending=50_000))
    sub = await js.pull_subscribe_bind(durable="bench-bare", stream=messaging.EVENTS_STREAM)
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
    await sub.unsubscribe()
    await conn.close()
    return total / meter.elapsed()


async def _store_journeys(database_url: str, count: int) -> None:
    """Journeys (with a reference and an event each) already stored before the run, as after months of
    service.

    Their ids are UUIDv7 (Postgres 18's `uuidv7()`), as the backend makes them.
    """
    conn = await asyncpg.connect(database_url)
    await db.migrate(conn)
    progress(f"storing {count:,} journeys first")
    await conn.execute(
        """
        WITH j AS (
            INSERT INTO journeys (id, site, stage, state, finished_at, created_at, updated_at)
            SELECT uuidv7(), 'old-' || (g % 50), 'completed',
                   '{"stage": ["9|01735689600000000|/queue|old", "completed"]}', now(), now(), now()
            FROM generate_series(1, $1) g
            RETURNING id
        ), numbered AS (SELECT id, row_number() OVER () AS n FROM j),
        refs AS (INSERT INTO journey_refs (ref, journey_id) SELECT 'queue:OLD-' || n, id FROM numbered),
        inbox AS (INSERT INTO event_inbox (source, id) SELECT '/queue', 'old-' || n FROM numbered)
        INSERT INTO events (source, id, type, subject, site, time, data, journey_id)
        SELECT '/queue', 'old-' || n, 'service.completed', 'queue:OLD-' || n, 'old', now(), '{}', id FROM
            numbered
        """,
        count,
    )
    # measure the steady state, not the aftermath of the bulk load: its vacuum and checkpoint happen now
    await conn.execute("VACUUM ANALYZE")
    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
        await conn.execute("CHECKPOINT")
    await conn.close()


async def _backends(nats_url: str, creds: str | None, database_url: str, total: int, batch: int,
                    replicas: int, root: Path) -> float:
    """Rate of `replicas` backend processes draining the stream from its start."""
    nc = await messaging.connect(nats_url, "bench-ingest", creds)
    js = nc.jetstream()
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await js.delete_consumer(messaging.EVENTS_STREAM, messaging.APPLY_CONSUMER)
    await nc.close()
    env = {**os.environ, "SWITCHBOARD_DATABASE_URL": database_url, "SWITCHBOARD_NATS_URL": nats_url,
           "SWITCHBOARD_NATS_CREDS": creds or "", "SWITCHBOARD_DATA_DIR": str(root),
           "SWITCHBOARD_LOG_LEVEL": "WARNING",
           "SWITCHBOARD_APPLY_BATCH": str(batch)}
    conn = await asyncpg.connect(database_url)
    # counting only what this run applies (an index range on applied_at): a count of every stored event
    # would itself grow with the stored data and slow the server being measured
    since = await conn.fetchval("SELECT clock_timestamp()")
    backends = [BackendProcess(env, root / f"bench-backend-{i}.log").start() for i in range(replicas)]
    try:
        meter = Meter(f"backend x{replicas}", total)
        started, first_count = None, 0
        while True:
            await asyncio.sleep(0.05)
            if not await conn.fetchval("SELECT to_regclass('events') IS NOT NULL"):
                continue  # still migrating
            applied = await conn.fetchval("SELECT count(*) FROM events WHERE applied_at > $1", since)
            if started is None and applied:
                started, first_count = time.perf_counter(), applied
            meter.update(applied)
            if applied >= total:
                return (total - first_count) / (time.perf_counter() - started)  # type: ignore[operator]
            for b in backends:
                if b.process is not None and b.process.poll() is not None:
                    raise SystemExit(f"a backend exited: {b.log_path.read_text()[-2000:]}")
    finally:
        await conn.close()
        for b in backends:
            b.stop()


async def _run(urls: dict[str, str], total: int, batch: int, replicas: int, stored: int, root: Path,
               ) -> dict[str, object]:
    nc = await messaging.connect(urls["nats_url"], "bench-ingest", urls.get("nats_creds"))
    js = nc.jetstream()
    await messaging.recreate_streams(js)
    try:
        progress(f"generating {total:,} events")
        await _load(js, make_events(total))
        async with scratch_database(urls["database_url"], "bare") as bare_url:
            baseline = await _bare(js, bare_url, total, batch)
    finally:
        await nc.close()
    rates: dict[int, float] = {}
    for count in sorted({1, replicas}):
        async with scratch_database(urls["database_url"], f"apply{count}") as apply_url:
            if stored:
                await _store_journeys(apply_url, stored)
            rates[count] = await _backends(urls["nats_url"], urls.get("nats_creds"), apply_url, total, batch,
                                           count, root)
    figures: dict[str, object] = {
        "events": total, "batch": batch, "stored_journeys": stored, "events_per_s": round(rates[1]),
        "baseline_events_per_s": round(baseline), "ratio": round(rates[1] / baseline, 3),
    }
    if replicas > 1:
        figures[f"events_per_s_{replicas}_replicas"] = round(rates[replicas])
        figures["replica_scaling"] = round(rates[replicas] / rates[1], 3)
    return figures


def run_ingest_bench(*, events: int, batch: int, replicas: int, stored_journeys: int, nats_fsync: bool,
                     nats_auth: bool = True) -> None:
    print(f"bench ingest: {events:,} events, batches of {batch}, {replicas} replica(s),"
          f" {stored_journeys:,} journeys stored first, NATS fsync"
          f" {'always' if nats_fsync else 'every 2 min'},"
          f" embedded NATS auth {'on' if nats_auth else 'off'}", flush=True)
    with tempfile.TemporaryDirectory(prefix="switchboard-bench-") as tmp, \
            bench_servers(Path(tmp), nats_fsync=nats_fsync, nats_auth=nats_auth) as urls:
        # uvloop, as under uvicorn: the backend's loop, and the same one for the bare consumer
        figures = uvloop.run(_run(urls, events, batch, replicas, stored_journeys, Path(tmp)))
    figures["nats_fsync"] = "always" if nats_fsync else "2m"
    figures["nats_auth"] = "nats_creds" in urls
    print(f"backend {figures['events_per_s']:,} events/s, bare consumer {figures['baseline_events_per_s']:,}"
          f" events/s, ratio {figures['ratio']}", flush=True)
    report(figures)
