"""`switchboard bench ingest`: the backend's apply rate against a bare consumer, same events, same run.

The bare consumer is the floor a competent hand-written consumer sets here ("baseline": "pipelined"):
it fetches the next batch from JetStream while the current one is inserted, decodes the JSON, inserts
the rows with one batched asyncpg statement, commits, then acknowledges, the same batches and the
same durability (`synchronous_commit` on, ack after commit) as the backend. The backend does that plus
validation, personal-data checks, locking, the journey merge, routing rules and the outbox, as real
`switchboard backend` processes.

Fair by construction: both sides start from a database migrated and prefilled alike
(`--stored-journeys`), both are timed by the same watcher (rows committed, from the first seen to the
last), rounds alternate (bare, backend, bare, backend...) and the medians and spread are reported.
Every wait has a deadline. `--before <checkout>` adds the backend of another checkout as a side of every
round, so a change is measured before and after in one run, on the same servers and the same stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import msgspec
import nats
import uvloop
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from backend import db, messaging
from tools.backend_process import BackendProcess
from tools.bench import machine_cpu
from tools.bench.common import Meter, bench_servers, progress, report, scratch_database

PREFIX = "svc.events"


POLL_S = 0.05
BARE_TABLE = "bare_events"


@dataclass(frozen=True)
class Window:
    """One side's timed window: the events committed in it, its length and the CPU seconds spent in it."""
    events: int
    seconds: float
    cpu_s: dict[str, float]

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    def cpu_us_per_event(self) -> dict[str, float]:
        return {part: s * 1e6 / self.events for part, s in self.cpu_s.items()}


def make_events(total: int, seed: int = 7, prefix: str = PREFIX,
                site_subjects: bool = False) -> list[tuple[str, bytes, str]]:
    """`(subject, body, msg_id)` for journeys of six events each across 20 sites, plus capacity updates;
    `site_subjects`: each on its site's subject, as connectors limited to sites publish them."""
    rng = random.Random(seed)
    start = datetime(2026, 1, 5, 8, tzinfo=UTC)
    out: list[tuple[str, bytes, str]] = []

    def add(system: str, type_: str, subject: str, at: datetime, data: dict[str, object]) -> None:
        event = {"specversion": "1.0", "id": uuid.UUID(int=rng.getrandbits(128)).hex, "source": f"/{system}",
                 "type": type_, "subject": subject, "time": at.isoformat(), "data": data}
        subject = f"{prefix}.{system}.{type_}" + (f".{data['site']}" if site_subjects else "")
        out.append((subject, msgspec.json.encode(event), f"/{system} {event['id']}"))

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


async def _watch(conn: asyncpg.Connection, count_sql: str, args: tuple[object, ...], total: int,
                 label: str, deadline_s: float, check: Callable[[], None],
                 parts: Callable[[], dict[str, list[int]]]) -> Window:
    """The one clock for every side: rows committed, polled every 50 ms; it starts at the first poll that
    sees any and stops at the first that sees all, so start-up is counted on neither side. Also where the
    machine's CPU went in between (`parts` names the side's own processes)."""
    meter = Meter(label, total)
    give_up = time.monotonic() + deadline_s
    started: float | None = None
    first, cpu_at_start = 0, machine_cpu.snapshot()
    while True:
        await asyncio.sleep(POLL_S)
        done = await conn.fetchval(count_sql, *args)
        now = time.perf_counter()
        if started is None and done:
            started, first, cpu_at_start = now, done, machine_cpu.snapshot()
        meter.update(done)
        if done >= total and started is not None:
            # a run too short for two polls is timed over one poll interval
            seconds = max(now - started, POLL_S)
            return Window(total - first or total, seconds,
                          machine_cpu.spent(cpu_at_start, machine_cpu.snapshot(), parts()))
        check()
        if time.monotonic() > give_up:
            raise SystemExit(f"{label}: only {done:,} of {total:,} events committed after {deadline_s:.0f}s")


async def _bare(js: JetStreamContext, database_url: str, total: int, batch: int, round_: int,
                deadline_s: float) -> Window:
    """The pipelined bare consumer: the next fetch overlaps the current batch's insert; commit, then ack."""
    conn, watcher = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    durable = f"bench-bare-{round_}"
    await js.add_consumer(messaging.EVENTS_STREAM, ConsumerConfig(
        durable_name=durable, ack_policy=AckPolicy.EXPLICIT, ack_wait=60, max_ack_pending=50_000))
    sub = await js.pull_subscribe_bind(durable=durable, stream=messaging.EVENTS_STREAM)
    fetched: asyncio.Queue[list[Msg]] = asyncio.Queue(maxsize=2)

    async def fetch() -> None:
        count = 0
        while count < total:
            try:
                msgs = await sub.fetch(batch, timeout=5)
            except TimeoutError:
                continue  # the watcher's deadline ends a run that stalls
            count += len(msgs)
            await fetched.put(msgs)

    async def write() -> None:
        count = 0
        while count < total:
            msgs = await fetched.get()
            docs = [msgspec.json.decode(m.data) for m in msgs]
            async with conn.transaction():
                await conn.execute(
                    f"INSERT INTO {BARE_TABLE} SELECT * FROM unnest($1::text[], $2::text[], $3::text[],"
                    " $4::text[], $5::timestamptz[], $6::jsonb[]) ON CONFLICT DO NOTHING",
                    [d["source"] for d in docs], [d["id"] for d in docs], [d["type"] for d in docs],
                    [d["subject"] for d in docs], [datetime.fromisoformat(d["time"]) for d in docs],
                    [msgspec.json.encode(d["data"]).decode() for d in docs],
                )
            for m in msgs:
                await m.ack()
            count += len(msgs)

    tasks = [asyncio.create_task(fetch()), asyncio.create_task(write())]

    def check() -> None:
        for task in tasks:
            if task.done() and task.exception():
                raise SystemExit(f"the bare consumer failed: {task.exception()!r}")

    try:
        window = await _watch(watcher, f"SELECT count(*) FROM {BARE_TABLE}", (), total,
                              f"round {round_} bare (pipelined)", deadline_s, check,
                              lambda: {"consumer": [os.getpid()]})
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(nats.errors.Error):
            await sub.unsubscribe()
            await js.delete_consumer(messaging.EVENTS_STREAM, durable)
        await conn.close()
        await watcher.close()
    return window


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



async def _prepare(database_url: str, stored: int) -> None:
    """Every side's database alike: migrated, the bare consumer's table, `stored` journeys, vacuumed."""
    conn = await asyncpg.connect(database_url)
    await db.migrate(conn)
    await conn.execute(f"CREATE TABLE {BARE_TABLE} (source text, id text, type text, subject text, time"
                       " timestamptz, data jsonb, PRIMARY KEY (source, id))")
    await conn.close()
    if stored:
        await _store_journeys(database_url, stored)


async def _backends(urls: dict[str, str], database_url: str, total: int, batch: int, replicas: int,
                    round_: int, root: Path, deadline_s: float, checkout: Path | None = None,
                    ) -> Window:
    """`replicas` backend processes (of `checkout`, by default this one) draining the stream from its
    start."""
    nc = await messaging.connect(urls["nats_url"], "bench-ingest", urls.get("nats_creds"))
    js = nc.jetstream()
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await js.delete_consumer(messaging.EVENTS_STREAM, messaging.APPLY_CONSUMER)
    await nc.close()
    env = {**os.environ, "SWITCHBOARD_DATABASE_URL": database_url, "SWITCHBOARD_NATS_URL": urls["nats_url"],
           "SWITCHBOARD_NATS_CREDS": urls.get("nats_creds") or "", "SWITCHBOARD_DATA_DIR": str(root),
           "SWITCHBOARD_LOG_LEVEL": "WARNING", "SWITCHBOARD_APPLY_BATCH": str(batch)}
    conn = await asyncpg.connect(database_url)
    # counting only what this run applies (an index range on applied_at): a count of every stored event
    # would itself grow with the stored data and slow the server being measured
    since = await conn.fetchval("SELECT clock_timestamp()")
    backends = [BackendProcess(env, root / f"bench-backend-{round_}-{i}.log", cwd=checkout).start()
                for i in range(replicas)]

    def check() -> None:
        for b in backends:
            if b.process is not None and b.process.poll() is not None:
                raise SystemExit(f"a backend exited: {b.log_path.read_text()[-2000:]}")

    try:
        return await _watch(conn, "SELECT count(*) FROM events WHERE applied_at > $1", (since,), total,
                            f"round {round_} backend x{replicas}", deadline_s, check,
                            lambda: {"backend": [b.process.pid for b in backends if b.process],
                                     "watcher": [os.getpid()]})
    finally:
        await conn.close()
        for b in backends:
            b.stop()


def _spread(values: list[float]) -> str:
    return f"median {statistics.median(values):,.0f} ({min(values):,.0f}–{max(values):,.0f})"


def _per_cpu_s(window: Window) -> float:
    """Events per backend CPU-second; 0 when the backend used less than a clock tick in the window."""
    return window.events / window.cpu_s["backend"] if window.cpu_s["backend"] else 0.0


def _median_parts(windows: list[Window]) -> dict[str, float]:
    """Each part's median CPU per event (µs) over the rounds."""
    per_event = [w.cpu_us_per_event() for w in windows]
    return {part: round(statistics.median(p[part] for p in per_event), 1) for part in per_event[0]}


def _ceiling(window: Window) -> float:
    """Events/s the side would reach with every core busy on its work at its CPU per event: its own
    processes and the servers' ("other", the rest of the machine, left out in its favour)."""
    own_s = window.cpu_s["machine"] - window.cpu_s["other"]
    return (os.cpu_count() or 1) * window.events / own_s if own_s > 0 else 0.0


def _cpu_figures(sides: dict[str, list[Window]], bare: list[Window]) -> dict[str, object]:
    per_event = {side: _median_parts(ws) for side, ws in sides.items()}
    # what the backend's CPU per event allows at most, against the floor measured
    ceiling = round(statistics.median(
        _ceiling(w) / b.rate for w, b in zip(sides["backend"], bare, strict=True)), 3)
    for side, parts in per_event.items():
        progress(f"CPU per event, {side}: " + ", ".join(f"{k} {v:,.1f} µs" for k, v in parts.items()))
    progress(f"the backend at its CPU per event with every core busy: ratio {ceiling} at most")
    return {"cpu_us_per_event": per_event, "ratio_ceiling": ceiling,
            "cores_busy": {side: round(statistics.median(w.cpu_s["machine"] / w.seconds for w in ws), 2)
                           for side, ws in sides.items()}}


async def _run(urls: dict[str, str], options: dict[str, int], root: Path, before: Path | None,
               site_subjects: bool) -> dict[str, object]:
    total, batch, replicas, stored = (options[k] for k in ("events", "batch", "replicas", "stored_journeys"))
    nc = await messaging.connect(urls["nats_url"], "bench-ingest", urls.get("nats_creds"))
    js = nc.jetstream()
    await messaging.recreate_streams(js)
    counts = sorted({1, replicas})
    bare: list[Window] = []
    befores: list[Window] = []
    runs: dict[int, list[Window]] = {n: [] for n in counts}
    try:
        progress(f"generating {total:,} events")
        await _load(js, make_events(total, site_subjects=site_subjects))
        # alternated: bare, backend, bare, backend... so a busy moment on the shared machine hits both
        for round_ in range(1, options["rounds"] + 1):
            async with scratch_database(urls["database_url"], "bare") as url:
                await _prepare(url, stored)
                bare.append(await _bare(js, url, total, batch, round_, options["deadline_s"]))
            if before is not None:
                async with scratch_database(urls["database_url"], "before") as url:
                    await _prepare(url, stored)
                    befores.append(await _backends(urls, url, total, batch, 1, round_, root,
                                                   options["deadline_s"], before))
                progress(f"round {round_}: backend of {before} {befores[-1].rate:,.0f}/s")
            for count in counts:
                async with scratch_database(urls["database_url"], f"apply{count}") as url:
                    await _prepare(url, stored)
                    runs[count].append(await _backends(urls, url, total, batch, count, round_, root,
                                                       options["deadline_s"]))
            progress(f"round {round_}: bare {bare[-1].rate:,.0f}/s, "
                     + ", ".join(f"backend x{n} {runs[n][-1].rate:,.0f}/s" for n in counts))
    finally:
        await nc.close()
    bare_rates = [w.rate for w in bare]
    rates = {n: [w.rate for w in ws] for n, ws in runs.items()}
    per_cpu_s = {n: [_per_cpu_s(w) for w in ws] for n, ws in runs.items()}
    ratios = [r / b for r, b in zip(rates[1], bare_rates, strict=True)]
    progress(f"bare (pipelined) {_spread(bare_rates)} events/s")
    for n in counts:
        progress(f"backend x{n} {_spread(rates[n])} events/s, {_spread(per_cpu_s[n])} events per CPU-second")
    figures: dict[str, object] = {
        "baseline": "pipelined", "events": total, "batch": batch, "rounds": options["rounds"],
        "stored_journeys": stored, "events_per_s": round(statistics.median(rates[1])),
        "baseline_events_per_s": round(statistics.median(bare_rates)),
        "ratio": round(statistics.median(ratios), 3),
        "events_per_s_rounds": [round(r) for r in rates[1]],
        "baseline_events_per_s_rounds": [round(b) for b in bare_rates],
        "ratio_rounds": [round(r, 3) for r in ratios],
        "events_per_cpu_s": round(statistics.median(per_cpu_s[1])),
    }
    sides = {"baseline": bare, "backend": runs[1], **({"before": befores} if befores else {})}
    figures.update(_cpu_figures(sides, bare))
    if before is not None:
        before_rates = [w.rate for w in befores]
        figures["before"] = str(before)
        figures["before_events_per_s"] = round(statistics.median(before_rates))
        figures["before_events_per_s_rounds"] = [round(r) for r in before_rates]
        figures["before_ratio"] = round(statistics.median(
            [r / b for r, b in zip(before_rates, bare_rates, strict=True)]), 3)
        figures["before_events_per_cpu_s"] = round(statistics.median(_per_cpu_s(w) for w in befores))
        # after / before, round by round (the two ran next to each other)
        figures["speedup_rounds"] = [round(a / b, 3) for a, b in zip(rates[1], before_rates, strict=True)]
        figures["speedup"] = round(statistics.median(figures["speedup_rounds"]), 3)  # type: ignore[arg-type]
        progress(f"backend of {before} {_spread(before_rates)} events/s")
    if replicas > 1:
        figures[f"events_per_s_{replicas}_replicas"] = round(statistics.median(rates[replicas]))
        figures[f"events_per_s_{replicas}_replicas_rounds"] = [round(r) for r in rates[replicas]]
        figures["replica_scaling"] = round(
            statistics.median(rates[replicas]) / statistics.median(rates[1]), 3)
        figures[f"events_per_cpu_s_{replicas}_replicas"] = round(statistics.median(per_cpu_s[replicas]))
        # events per backend CPU-second, N replicas against one: what coordinating them costs
        figures["replica_cpu_efficiency"] = round(
            statistics.median(per_cpu_s[replicas]) / statistics.median(per_cpu_s[1]), 3)
    return figures


def run_ingest_bench(*, events: int, batch: int, replicas: int, stored_journeys: int, nats_fsync: bool,
                     nats_auth: bool = True, rounds: int = 3, deadline_s: float = 300.0,
                     before: Path | None = None, site_subjects: bool = False) -> None:
    print(f"bench ingest: {events:,} events, batches of {batch}, {replicas} replica(s), {rounds} alternated"
          f" rounds, {stored_journeys:,} journeys stored first in every database, NATS fsync"
          f" {'always' if nats_fsync else 'every 2 min'},"
          f" embedded NATS auth {'on' if nats_auth else 'off'}"
          + (", every event on its site's subject" if site_subjects else ""), flush=True)
    options = {"events": events, "batch": batch, "replicas": replicas, "stored_journeys": stored_journeys,
               "rounds": rounds, "deadline_s": int(deadline_s)}
    with tempfile.TemporaryDirectory(prefix="switchboard-bench-") as tmp, \
            bench_servers(Path(tmp), nats_fsync=nats_fsync, nats_auth=nats_auth) as urls:
        # uvloop, as under uvicorn: the backend's loop, and the same one for the bare consumer
        figures = uvloop.run(_run(urls, options, Path(tmp), before.resolve() if before else None,
                                  site_subjects))
    figures["nats_fsync"] = "always" if nats_fsync else "2m"
    figures["nats_auth"] = "nats_creds" in urls
    figures["site_subjects"] = site_subjects
    print(f"backend {figures['events_per_s']:,} events/s, pipelined bare consumer"
          f" {figures['baseline_events_per_s']:,} events/s, ratio {figures['ratio']} (medians of {rounds})",
          flush=True)
    report(figures)
