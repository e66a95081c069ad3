"""`switchboard bench live`: the live websocket against bare floors and a bare broadcast, same run.

- Latency: connector publish (JetStream, acknowledged) → apply → live feed → NATS bus → hub →
  websocket receive, at a steady event rate with `clients` clients, each scoped to one site. The
  floors are what any design pays: one JetStream publish-ack, one asyncpg commit, one websocket
  echo (round trip), each the median of many.
- Throughput: updates put on the `svc.live` bus, delivered to `fanout_clients` clients watching
  one site, against a bare `websockets` server broadcasting frames of the same shape and size to
  the same number of clients.
- Memory: the backend's resident memory per idle subscribed connection.

The backend runs as its own process (`switchboard backend`), as in production; clients, publisher
and the bare servers run here. The last line printed is one JSON object of the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import multiprocessing
import os
import secrets
import statistics
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import asyncpg
import msgspec
import nats
import uvloop
import websockets
from nats.js.api import StorageType, StreamConfig
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from backend import db, messaging
from backend.live.bus import SUBJECT_PREFIX, encode_update
from backend.live.schemas import Update
from backend.settings import BackendSettings
from switchboard import bus
from switchboard.settings import BusSection, TokenSection
from switchboard.tokens import mint_token
from switchboard.waits import wait_set
from tools.backend_process import BackendProcess
from tools.bench.common import bench_servers, progress, report, scratch_database
from tools.embedded import free_port

FLOOR_SAMPLES = 300
FLOOR_STREAM = "BENCH_LIVE_FLOOR"
FANOUT_SITE = "bench-fanout"
DELIVERY_DEADLINE_S = 15.0  # after the last publish, for the last deliveries
LAST_KEY = "last"  # the final update of a throughput round: newest for its key, so never coalesced away
LAST_MARKER = f'"key":"{LAST_KEY}"'.encode()

_decode = msgspec.json.decode


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Backend(BackendProcess):
    """`switchboard backend` in a process of its own, with what this benchmark reads from it."""

    def __init__(self, database_url: str, nats_url: str, secret: str, data_dir: Path,
                 creds: str | None) -> None:
        super().__init__({
            **os.environ,
            "SWITCHBOARD_DATABASE_URL": database_url,
            "SWITCHBOARD_NATS_URL": nats_url,
            "SWITCHBOARD_NATS_CREDS": creds or "",
            "SWITCHBOARD_JWT_SECRET": secret,
            "SWITCHBOARD_DATA_DIR": str(data_dir),
            "SWITCHBOARD_LOG_LEVEL": "WARNING",
        }, data_dir / "backend.log")
        self.ws_url = f"ws://127.0.0.1:{self.port}/api/v1/live"
        self.start()

    def metric_sums(self, *names: str) -> dict[str, float]:
        """`<name>_sum` and `<name>_count` of histograms on the backend's /metrics."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as response:  # noqa: S310 - loopback
            lines = response.read().decode().splitlines()
        wanted = {f"{name}_{part}" for name in names for part in ("sum", "count")}
        return {
            name: float(value) for name, _, value in (line.partition(" ") for line in lines) if name in wanted
        }

    def rss_kib(self) -> int:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS for the backend process")


async def connect(url: str, token: str) -> websockets.ClientConnection:
    return await websockets.connect(
        url,
        additional_headers={"Authorization": f"Bearer {token}"},
        compression=None,
        open_timeout=30,
        max_size=2**20,
    )


async def subscribe(ws: websockets.ClientConnection, topics: list[str]) -> None:
    await ws.send(json.dumps({"op": "subscribe", "topics": topics}))
    async with asyncio.timeout(30):  # a snapshot that never comes fails the run rather than hang it
        for _ in topics:
            while _decode(await ws.recv())["op"] != "snapshot":
                pass


# ---- floors -----------------------------------------------------------------------------------


async def floors(nats_url: str, database_url: str, creds: str | None) -> dict[str, float]:
    nc = await bus.connect(nats_url, "bench-live-floors", creds=creds)
    js = nc.jetstream()
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await js.delete_stream(FLOOR_STREAM)
    await js.add_stream(
        StreamConfig(name=FLOOR_STREAM, subjects=["bench.live.floor"], storage=StorageType.FILE)
    )
    body = b"x" * 300
    publish_ack = []
    for _ in range(FLOOR_SAMPLES):
        started = time.perf_counter()
        await js.publish("bench.live.floor", body)
        publish_ack.append(time.perf_counter() - started)
    await js.delete_stream(FLOOR_STREAM)
    await nc.close()

    conn = await asyncpg.connect(database_url)
    # a logged table, as the journeys are: the commit waits for the WAL flush
    await conn.execute("CREATE TABLE bench_floor (id bigint, v text)")
    commits = []
    for n in range(FLOOR_SAMPLES):
        started = time.perf_counter()
        async with conn.transaction():
            await conn.execute("INSERT INTO bench_floor VALUES ($1, $2)", n, "x" * 300)
        commits.append(time.perf_counter() - started)
    await conn.execute("DROP TABLE bench_floor")
    await conn.close()

    async def echo(ws: websockets.ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    echoes = []
    async with websockets.serve(echo, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with websockets.connect(f"ws://127.0.0.1:{port}", compression=None) as ws:
            frame = "x" * 300
            for _ in range(FLOOR_SAMPLES):
                started = time.perf_counter()
                await ws.send(frame)
                await ws.recv()
                echoes.append(time.perf_counter() - started)
    return {
        "jetstream_publish_ack_ms": statistics.median(publish_ack) * 1000,
        "asyncpg_commit_ms": statistics.median(commits) * 1000,
        "websocket_echo_ms": statistics.median(echoes) * 1000,
    }


# ---- end-to-end latency -------------------------------------------------------------------------


class Paced(NamedTuple):
    samples: list[float]  # one latency per frame delivered
    expected: int  # frames the clients should have received
    achieved_per_s: float  # the publish rate reached, not the one asked for

    @property
    def missing(self) -> int:
        return max(self.expected - len(self.samples), 0)


class CollectorPauses:
    """This client's own full garbage collections while it times: its readers wait them out, so each one
    shows as latency the backend did not add. Reported so that a disturbed measurement can be told apart."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if info["generation"] == 2:
            if phase == "start":
                self._started = time.perf_counter()
            else:
                self.seconds.append(time.perf_counter() - self._started)

    def __enter__(self) -> CollectorPauses:
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self)


class Latencies:
    """Clients scoped to one site each, timing every update they receive against when it was published."""

    def __init__(self, sockets: list[websockets.ClientConnection], clients: int, sites: int) -> None:
        self.sockets, self.clients, self.sites = sockets, clients, sites
        self.published_at: dict[str, float] = {}
        self.samples: list[float] = []
        self.expected = 0
        self.done = asyncio.Event()
        self.readers = [asyncio.create_task(self._receive(ws)) for ws in sockets]

    async def _receive(self, ws: websockets.ClientConnection) -> None:
        async for message in ws:
            frame = _decode(message)
            if frame["op"] == "update":
                at = self.published_at.get(frame["data"]["refs"][0])
                if at is not None:
                    self.samples.append(time.perf_counter() - at)
                    if len(self.samples) >= self.expected:
                        self.done.set()

    async def paced(self, label: str, total: int, rate: float, publish_one: Any) -> Paced:
        """`publish_one(n, site)` for n < total at a steady `rate`; the deliveries, counted against those
        expected, within a deadline: an update that never arrives is counted missing, never left out."""
        self.samples, self.done = [], asyncio.Event()
        self.expected = sum(
            self.clients // self.sites + (n % self.sites < self.clients % self.sites) for n in range(total)
        )
        started = time.perf_counter()
        # publishes in flight only: holding every finished task made this client's own full garbage
        # collections grow with the run (165 ms three minutes in), and its readers counted them as latency
        in_flight: set[asyncio.Task[None]] = set()
        failed: list[BaseException] = []

        def settled(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            error = None if task.cancelled() else task.exception()
            if error is not None:
                failed.append(error)

        for n in range(total):
            # steady rate: each publish at its slot, never in bursts to catch up more than one slot; not
            # waiting for the one before, as connectors publish (a slot is shorter than an fsync'd ack here)
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(publish_one(n, f"bench-{n % self.sites:03d}"))
            in_flight.add(task)
            task.add_done_callback(settled)
            if n and n % int(rate) == 0:
                progress(
                    f"{label}: published {n:,}/{total:,}, {len(self.samples):,}/{self.expected:,} received"
                )
        await asyncio.gather(*in_flight)  # every publish acknowledged (or the run fails): all counted
        if failed:
            raise failed[0]
        achieved = total / (time.perf_counter() - started)
        await wait_set(self.done, DELIVERY_DEADLINE_S)
        result = Paced(list(self.samples), self.expected, achieved)
        delivered = len(result.samples)
        progress(f"{label}: {total:,} published at {achieved:,.0f}/s, {delivered:,}/{self.expected:,}"
                 f" frames delivered, {result.missing:,} missing after {DELIVERY_DEADLINE_S:.0f}s")
        return result

    async def close(self) -> None:
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in self.sockets), return_exceptions=True)


async def end_to_end(
    backend: Backend,
    settings: BackendSettings,
    nats_url: str,
    database_url: str,
    *,
    clients: int,
    sites: int,
    rate: float,
    seconds: float,
) -> dict[str, Any]:
    """Latencies publish → websocket receive ("e2e"), publish → the event's row written by the apply
    worker ("ingest"), and, for the live path alone, `svc.live` bus → websocket receive ("live")."""
    sockets = []
    for n in range(clients):
        token = mint_token(settings.tokens, sub=f"bench-{n}", roles=["manager"],
                           sites=[f"bench-{n % sites:03d}"])
        sockets.append(await connect(backend.ws_url, token))
    await asyncio.gather(*(subscribe(ws, ["journeys"]) for ws in sockets))
    progress(f"latency: {clients} clients subscribed across {sites} sites")
    gc.collect()  # set-up's garbage first; what it made stays, and the client's full collections while it
    gc.freeze()  # times need not walk it
    timing = Latencies(sockets, clients, sites)
    nc = await bus.connect(nats_url, "bench-live", creds=settings.bus.nats_creds)
    js = nc.jetstream()
    run = uuid.uuid4().hex[:6]
    published_wall: dict[str, float] = {}  # wall clock, to compare with Postgres's `applied_at`

    async def publish_event(n: int, site: str) -> None:
        ref = f"queue:B-{run}-{n}"
        event = {
            "specversion": "1.0",
            "id": uuid.uuid4().hex,
            "source": "/queue",
            "type": "customer.arrived",
            "subject": ref,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "data": {"site": site},
        }
        timing.published_at[ref], published_wall[ref] = time.perf_counter(), time.time()
        await js.publish(
            "svc.events.queue.customer.arrived",
            msgspec.json.encode(event),
            headers={"Nats-Msg-Id": f"/queue {event['id']}"},
        )

    async def publish_update(n: int, site: str) -> None:
        ref = f"bus:L-{run}-{n}"
        timing.published_at[ref] = time.perf_counter()
        await nc.publish(SUBJECT_PREFIX + "journeys", encode_update(site, ref, {"refs": [ref]}))

    total = int(rate * seconds)
    with CollectorPauses() as pauses:
        e2e = await timing.paced("latency", total, rate, publish_event)
        live = await timing.paced("live path", total, rate, publish_update)
    if pauses.seconds:
        progress(f"client: {len(pauses.seconds)} full garbage collections while timing, the longest"
                 f" {max(pauses.seconds) * 1000:.1f} ms (its readers waited them out)")
    await timing.close()
    await nc.close()
    conn = await asyncpg.connect(database_url)
    rows = await conn.fetch(
        "SELECT subject, applied_at FROM events WHERE subject = ANY($1::text[])", list(published_wall)
    )
    await conn.close()
    ingest = [r["applied_at"].timestamp() - published_wall[r["subject"]] for r in rows]
    apply = await asyncio.to_thread(
        backend.metric_sums, "switchboard_apply_batch_seconds", "switchboard_apply_batch_size"
    )
    if apply.get("switchboard_apply_batch_size_count"):
        batches = apply["switchboard_apply_batch_size_count"]
        size = apply["switchboard_apply_batch_size_sum"] / batches
        batch_ms = apply["switchboard_apply_batch_seconds_sum"] / batches * 1000
        progress(f"ingest: {batches:,.0f} apply batches of {size:.1f} events, {batch_ms:.1f} ms on average")
    return {"e2e": e2e, "ingest": ingest, "live": live, "client_gc_pauses": pauses.seconds}


# ---- throughput ---------------------------------------------------------------------------------


def bench_data(n: int) -> dict[str, Any]:
    """A journey-shaped update of the usual size."""
    return {
        "id": str(uuid.UUID(int=n)),
        "site": FANOUT_SITE,
        "stage": "waiting",
        "refs": [f"queue:T-{n:06d}"],
        "service": "passport",
        "slot_start": None,
        "priority": "normal",
        "eligibility": "passed",
        "eligibility_reason": None,
        "last_interaction": None,
        "counter": None,
        "ticket": f"T-{n:06d}",
        "queue_name": "main",
        "channel": "branch",
        "outcome": None,
        "created_at": "2026-01-05T08:00:00Z",
        "updated_at": "2026-01-05T08:01:40Z",
    }


def update_keys(updates: int, keys: int) -> list[str]:
    return [f"k{n % keys}" for n in range(updates - 1)] + [LAST_KEY]


class CountingClient(asyncio.Protocol):
    """A `websockets` client on its sans-I/O protocol, as light as a client gets: it counts text frames
    until the last update, so the fan-out figures measure the servers rather than the clients."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.protocol = ClientProtocol(parse_uri(url), max_size=2**20)
        self.request = self.protocol.connect()
        for name, value in headers.items():
            self.request.headers[name] = value
        loop = asyncio.get_running_loop()
        self.next_text: asyncio.Future[bytes] | None = None
        self.opened: asyncio.Future[None] = loop.create_future()
        self.last: asyncio.Future[float] = loop.create_future()
        self.counting = False
        self.count = 0
        self.transport: asyncio.Transport | None = None

    @classmethod
    async def open(cls, url: str, headers: dict[str, str] | None = None) -> CountingClient:
        address = urlsplit(url)
        if address.hostname is None or address.port is None:
            raise ValueError(f"{url}: a host and a port are needed")
        _, client = await asyncio.get_running_loop().create_connection(
            lambda: cls(url, headers or {}), address.hostname, address.port
        )
        await client.opened
        return client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.protocol.send_request(self.request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                self.opened.set_result(None)
            elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                if self.counting:
                    self.count += 1
                    if LAST_MARKER in event.data and not self.last.done():
                        self.last.set_result(time.perf_counter())
                elif self.next_text is not None and not self.next_text.done():
                    self.next_text.set_result(bytes(event.data))
        self._flush()  # pongs and close replies

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data and self.transport is not None:
                self.transport.write(data)

    async def request_text(self, text: str, until: bytes) -> None:
        """Send `text`, then wait for a text frame that contains `until`."""
        self.protocol.send_text(text.encode())
        self._flush()
        while True:
            self.next_text = asyncio.get_running_loop().create_future()
            async with asyncio.timeout(30):
                frame = await self.next_text
            if until in frame:
                return

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def count_until_last(clients: list[CountingClient]) -> tuple[int, float]:
    """Frames received by all clients until each got the last update, and when the last one arrived."""
    for client in clients:
        client.counting = True
    async with asyncio.timeout(120):
        finished = await asyncio.gather(*(c.last for c in clients))
    return sum(c.count for c in clients), max(finished)


async def live_fanout(
    backend: Backend, settings: BackendSettings, nats_url: str, *, clients: int, updates: int, keys: int
) -> float:
    token = mint_token(settings.tokens, sub="bench-fanout", roles=["manager"], sites=[FANOUT_SITE])
    audience = [
        await CountingClient.open(backend.ws_url, {"Authorization": f"Bearer {token}"})
        for _ in range(clients)
    ]
    for client in audience:
        await client.request_text(json.dumps({"op": "subscribe", "topics": ["journeys"]}), b'"op":"snapshot"')
    nc = await bus.connect(nats_url, "bench-live-fanout", creds=settings.bus.nats_creds)
    payloads = [
        encode_update(FANOUT_SITE, key, bench_data(n)) for n, key in enumerate(update_keys(updates, keys))
    ]
    receiving = asyncio.create_task(count_until_last(audience))
    started = time.perf_counter()
    for payload in payloads:
        await nc.publish(SUBJECT_PREFIX + "journeys", payload)
    await nc.flush()
    delivered, finished = await receiving
    await nc.close()
    for client in audience:
        client.close()
    rate = delivered / (finished - started)
    progress(f"fan-out: {delivered:,} deliveries to {clients} clients at {rate:,.0f}/s")
    return rate


def serve_bare_broadcast(port: int, updates: int, keys: int, ready: Any) -> None:
    """A bare `websockets` server: on "go" from a control connection, broadcasts the frames to the others."""
    frames = [
        msgspec.json.encode(
            Update(
                topic="journeys",
                seq=n + 1,
                site=FANOUT_SITE,
                key=key,
                data=msgspec.Raw(msgspec.json.encode(bench_data(n))),
            )
        ).decode()
        for n, key in enumerate(update_keys(updates, keys))
    ]

    async def main() -> None:
        audience: set[websockets.ServerConnection] = set()

        async def handler(ws: websockets.ServerConnection) -> None:
            if await ws.recv() == "go":
                for n, frame in enumerate(frames):
                    websockets.broadcast(audience, frame)
                    if n % 100 == 0:
                        await asyncio.sleep(0)  # let the transports write, as a server under load would
                return
            audience.add(ws)
            await ws.send("subscribed")
            await ws.wait_closed()

        async with websockets.serve(handler, "127.0.0.1", port, compression=None):
            ready.set()
            await asyncio.Future()

    uvloop.run(main())


async def bare_fanout(*, clients: int, updates: int, keys: int) -> float:
    port = free_port()
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    server = context.Process(target=serve_bare_broadcast, args=(port, updates, keys, ready), daemon=True)
    server.start()
    try:
        await asyncio.to_thread(ready.wait, 60)
        url = f"ws://127.0.0.1:{port}"
        audience = [await CountingClient.open(url) for _ in range(clients)]
        for client in audience:
            await client.request_text("subscribe", b"subscribed")
        receiving = asyncio.create_task(count_until_last(audience))
        async with websockets.connect(url, compression=None) as control:
            started = time.perf_counter()
            await control.send("go")
            delivered, finished = await receiving
        for client in audience:
            client.close()
    finally:
        server.terminate()
        server.join(10)
    rate = delivered / (finished - started)
    progress(f"fan-out baseline: {delivered:,} deliveries to {clients} clients at {rate:,.0f}/s")
    return rate


# ---- memory -------------------------------------------------------------------------------------


async def idle_memory(backend: Backend, settings: BackendSettings, *, connections: int) -> float:
    token = mint_token(settings.tokens, sub="bench-idle", roles=["manager"], sites=["bench-idle"])
    # one connection first: the first one pays for code paths and caches, not per connection
    warm = await connect(backend.ws_url, token)
    await subscribe(warm, ["integrations"])
    await asyncio.sleep(1)
    before = backend.rss_kib()
    sockets = []
    for _ in range(connections):
        ws = await connect(backend.ws_url, token)
        await subscribe(ws, ["integrations"])
        sockets.append(ws)
    await asyncio.sleep(2)
    after = backend.rss_kib()
    await asyncio.gather(warm.close(), *(ws.close() for ws in sockets), return_exceptions=True)
    per_connection = (after - before) / connections
    progress(
        f"memory: {connections} idle connections took {after - before:,} KiB ({per_connection:.1f} KiB each)"
    )
    return per_connection


# ---- the run ------------------------------------------------------------------------------------


async def _run(data_dir: Path, urls: dict[str, str], options: dict[str, Any]) -> dict[str, Any]:
    secret = secrets.token_urlsafe(48)
    settings = BackendSettings(tokens=TokenSection(jwt_secret=secret, data_dir=str(data_dir)),
                               bus=BusSection(nats_creds=urls.get("nats_creds") or None))
    async with scratch_database(urls["database_url"], "live") as database_url:
        conn = await asyncpg.connect(database_url)
        await db.migrate(conn)
        await conn.close()
        nc = await bus.connect(urls["nats_url"], "bench-live-setup", creds=settings.bus.nats_creds)
        await messaging.ensure_streams(nc.jetstream(), 120.0)
        await nc.close()
        progress("measuring the floors")
        floor = await floors(urls["nats_url"], database_url, settings.bus.nats_creds)
        progress("floors: " + ", ".join(f"{k} {v:.3f}" for k, v in floor.items()))
        backend = Backend(database_url, urls["nats_url"], secret, data_dir, settings.bus.nats_creds)
        try:
            await asyncio.to_thread(backend.wait_ready)
            # memory first, while no earlier phase has left freed memory for new connections to reuse
            idle = await idle_memory(backend, settings, connections=options["idle"])
            latency = await end_to_end(
                backend,
                settings,
                urls["nats_url"],
                database_url,
                clients=options["clients"],
                sites=options["sites"],
                rate=options["rate"],
                seconds=options["seconds"],
            )
            # alternated rounds, medians: on a shared machine one round of either can be unlucky
            live_rates, bare_rates = [], []
            for _ in range(options["rounds"]):
                live_rates.append(
                    await live_fanout(
                        backend,
                        settings,
                        urls["nats_url"],
                        clients=options["fanout_clients"],
                        updates=options["updates"],
                        keys=options["keys"],
                    )
                )
                bare_rates.append(
                    await bare_fanout(
                        clients=options["fanout_clients"], updates=options["updates"], keys=options["keys"]
                    )
                )
            live_rate, bare_rate = statistics.median(live_rates), statistics.median(bare_rates)
        finally:
            backend.stop()

    e2e, live = latency["e2e"], latency["live"]
    samples = {"e2e": e2e.samples, "ingest": latency["ingest"], "live": live.samples}

    def ms(name: str, q: float) -> float | None:
        return round(percentile(samples[name], q) * 1000, 3) if samples[name] else None

    return {
        "e2e_p50_ms": ms("e2e", 0.50),
        "e2e_p99_ms": ms("e2e", 0.99),
        "floors_sum_ms": round(sum(floor.values()), 3),
        "deliveries_per_s": round(live_rate),
        "baseline_deliveries_per_s": round(bare_rate),
        "delivery_ratio": round(live_rate / bare_rate, 3),
        "idle_kib_per_connection": round(idle, 1),
        "floors_ms": {k: round(v, 3) for k, v in floor.items()},
        # where e2e goes: publish → the apply worker writing the event's row, and the live path alone
        "ingest_p50_ms": ms("ingest", 0.50),
        "ingest_p99_ms": ms("ingest", 0.99),
        "live_path_p50_ms": ms("live", 0.50),
        "live_path_p99_ms": ms("live", 0.99),
        "missing_updates": e2e.missing + live.missing,
        "client_gc_pauses": len(latency["client_gc_pauses"]),
        "client_gc_pause_max_ms": round(max(latency["client_gc_pauses"], default=0.0) * 1000, 3),
        "e2e_frames_delivered": len(e2e.samples),
        "e2e_frames_expected": e2e.expected,
        "live_path_frames_delivered": len(live.samples),
        "live_path_frames_expected": live.expected,
        "events_per_s": round(e2e.achieved_per_s, 1),
        "events_per_s_requested": options["rate"],
        "clients": options["clients"],
        "sites": options["sites"],
        "fanout_clients": options["fanout_clients"],
        "fanout_updates": options["updates"],
        "fanout_rounds": options["rounds"],
        "idle_connections": options["idle"],
    }


def run_live_bench(
    *,
    clients: int,
    sites: int,
    rate: float,
    seconds: float,
    fanout_clients: int,
    updates: int,
    keys: int,
    rounds: int,
    idle: int,
    nats_fsync: bool = True,
) -> None:
    logging.getLogger("websockets").setLevel(logging.WARNING)  # a line per connection otherwise
    options = {
        "clients": clients,
        "sites": sites,
        "rate": rate,
        "seconds": seconds,
        "fanout_clients": fanout_clients,
        "updates": updates,
        "keys": keys,
        "rounds": rounds,
        "idle": idle,
    }
    with tempfile.TemporaryDirectory(prefix="switchboard-bench-live-") as tmp, \
            bench_servers(Path(tmp), nats_fsync=nats_fsync) as urls:
        figures = uvloop.run(_run(Path(tmp), urls, options))
    figures["nats_fsync"] = "always" if nats_fsync else "2m"
    missing = figures["missing_updates"]
    if missing:
        progress(f"{missing:,} updates never arrived: the latency figures leave them out")
    report(figures)
    if missing:
        raise SystemExit(1)
