"""`switchboard chaos`: events from simulated connectors, with duplicates and reordering, while backend
replicas are SIGKILLed at random moments and Postgres and NATS are each killed and restarted.

Afterwards every event JetStream acknowledged must be applied exactly once, and every journey must equal
the reference merge of its distinct events. The run uses embedded servers of its own, since it must be
able to kill them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import nats
import uvloop

from backend import messaging
from backend.journeys import services
from switchboard.backend_process import BackendProcess
from switchboard.bench.common import progress, report
from switchboard.bench.ingest import make_events
from switchboard.embedded import EmbeddedNats, EmbeddedPostgres
from switchboard.reference_merge import expected_journey, observed

REPLICAS = 2
PUBLISH_RATE = 2500  # events per second: slow enough that kills land while work is in flight


@dataclass
class Tally:
    acknowledged: set[tuple[str, str]] = field(default_factory=set)
    broker_duplicates: int = 0
    deliveries: int = 0


def plan(total: int, seed: int) -> tuple[list[tuple[str, bytes, str]], dict[str, list[dict[str, Any]]]]:
    """Messages to publish (with duplicates and local reordering) and the distinct events per journey."""
    rng = random.Random(seed)
    events = make_events(total, seed)
    messages = []
    for subject, body, msg_id in events:
        messages.append((subject, body, msg_id))
        roll = rng.random()
        if roll < 0.05:
            messages.append((subject, body, msg_id))  # a resend JetStream's duplicate window catches
        elif roll < 0.10:
            messages.append((subject, body, f"{msg_id} resent"))  # one only Postgres can recognise
    for start in range(0, len(messages), 50):
        window = messages[start:start + 50]
        rng.shuffle(window)
        messages[start:start + 50] = window
    journeys: dict[str, list[dict[str, Any]]] = {}
    for _, body, _ in events:
        event = msgspec.json.decode(body)
        if event["type"] == "capacity.changed":
            continue
        anchor = event["data"]["links"][0] if event["data"].get("links") else event["subject"]
        number = anchor.split("-", 1)[1]
        journeys.setdefault(number, []).append(event)
    return messages, journeys


async def publish_all(nats_url: str, messages: list[tuple[str, bytes, str]], tally: Tally) -> None:
    nc = await messaging.connect(nats_url, "switchboard-chaos-publisher")
    js = nc.jetstream()
    started = time.monotonic()

    async def send(subject: str, body: bytes, msg_id: str) -> None:
        while True:  # a connector retries until JetStream acknowledges: NATS restarts under it
            try:
                ack = await js.publish(subject, body, headers={"Nats-Msg-Id": msg_id}, timeout=2)
                break
            except (nats.errors.Error, TimeoutError):
                await asyncio.sleep(0.2)
        tally.deliveries += 1
        tally.broker_duplicates += bool(ack.duplicate)
        doc = msgspec.json.decode(body)
        tally.acknowledged.add((doc["source"], doc["id"]))

    pending: set[asyncio.Task[None]] = set()
    for n, (subject, body, msg_id) in enumerate(messages):
        pending.add(asyncio.create_task(send(subject, body, msg_id)))
        if len(pending) >= 200:
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        ahead = n / PUBLISH_RATE - (time.monotonic() - started)
        if ahead > 0:
            await asyncio.sleep(ahead)
    await asyncio.gather(*pending)
    await nc.close()


async def count_applied(database_url: str) -> int | None:
    try:
        conn = await asyncpg.connect(database_url, timeout=2)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return None
    try:
        return await conn.fetchval("SELECT count(*) FROM events")
    except asyncpg.PostgresError:
        return None
    finally:
        await conn.close()


async def drained(nats_url: str) -> bool:
    with contextlib.suppress(nats.errors.Error, TimeoutError, OSError):
        nc = await nats.connect(nats_url.split(","), connect_timeout=2, max_reconnect_attempts=0)
        try:
            info = await nc.jetstream().consumer_info(messaging.EVENTS_STREAM, messaging.APPLY_CONSUMER)
            return info.num_pending == 0 and info.num_ack_pending == 0
        finally:
            await nc.close()
    return False


async def verify(database_url: str, tally: Tally, journeys: dict[str, list[dict[str, Any]]],
                  stream_messages: int) -> dict[str, int]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT source, id FROM events")
        applied = {(r["source"], r["id"]) for r in rows}
        failures = await conn.fetchval("SELECT count(*) FROM failures")
        mismatched = duplicated_journeys = 0
        for events in journeys.values():
            refs = sorted({e["subject"] for e in events}
                          | {r for e in events for r in e["data"].get("links", [])})
            ids = {r["journey_id"] for r in await conn.fetch(
                "SELECT journey_id FROM journey_refs WHERE ref = ANY($1::text[])", refs)}
            duplicated_journeys += max(len(ids) - 1, 0)
            journey = await services.get_journey(conn, ids.pop()) if ids else None
            if journey is None or observed(journey) != expected_journey(events) \
                    or len(journey.timeline) != len(events):
                mismatched += 1
    finally:
        await conn.close()
    return {
        "applied": len(applied),
        "duplicates_suppressed": tally.broker_duplicates + (stream_messages - len(applied) - failures),
        "lost": len(tally.acknowledged - applied),
        "applied_twice": (len(rows) - len(applied)) + duplicated_journeys,
        "mismatched_journeys": mismatched,
        "failures": failures,
    }


async def _chaos(total: int, kills: int, seed: int, root: Path) -> dict[str, Any]:
    rng = random.Random(seed)
    pg, ns = EmbeddedPostgres(root / "postgres"), EmbeddedNats(root / "nats")
    progress("starting embedded Postgres and NATS (fsync before acknowledging)")
    pg.start()
    ns.start()
    env = {**os.environ, "SWITCHBOARD_DATABASE_URL": pg.url, "SWITCHBOARD_NATS_URL": ns.url,
           "SWITCHBOARD_DATA_DIR": str(root), "SWITCHBOARD_LOG_LEVEL": "WARNING"}
    backends = [BackendProcess(env, root / f"backend-{i}.log") for i in range(REPLICAS)]
    tally = Tally()
    try:
        nc = await messaging.connect(ns.url, "switchboard-chaos-setup")
        await messaging.ensure_streams(nc.jetstream(), 120.0)
        await nc.close()
        for b in backends:
            b.start()
        for b in backends:
            b.wait_ready()
        messages, journeys = plan(total, seed)
        progress(f"{total:,} events as {len(messages):,} messages; {kills} backend kills, one Postgres and"
                 " one"
                 f" NATS kill, at random points of the run; seed {seed}")
        # each kill happens once this share of the events is acknowledged, so all land mid-run
        moments = sorted([("backend", rng.uniform(0.02, 0.98)) for _ in range(kills)]
                         + [("postgres", rng.uniform(0.2, 0.5)), ("nats", rng.uniform(0.5, 0.8))],
                         key=lambda m: m[1])
        publisher = asyncio.create_task(publish_all(ns.url, messages, tally))
        started = time.monotonic()
        for what, share in moments:
            while len(tally.acknowledged) < share * total and not publisher.done():
                await asyncio.sleep(0.02)
            if what == "backend":
                victim = rng.choice(backends)
                victim.kill()
                victim.start()
            else:
                server = pg if what == "postgres" else ns
                server.kill()
                await asyncio.sleep(rng.uniform(0.5, 2.0))
                server.start()
            applied = await count_applied(pg.url)
            progress(f"t={time.monotonic() - started:5.1f}s killed {what}; acknowledged"
                     f" {len(tally.acknowledged):,}, applied {applied if applied is not None else '?'}")
        while not publisher.done():
            await asyncio.sleep(1)
            progress(f"publishing: {len(tally.acknowledged):,}/{total:,} acknowledged")
        publisher.result()
        while not (await drained(ns.url) and all(b.ready() for b in backends)):
            progress(f"draining: applied {await count_applied(pg.url)}")
            await asyncio.sleep(1)
        nc = await nats.connect(ns.url)
        stream_messages = (await nc.jetstream().stream_info(messaging.EVENTS_STREAM)).state.messages
        await nc.close()
        figures = await verify(pg.url, tally, journeys, stream_messages)
    finally:
        for b in backends:
            try:
                b.stop()
            except AssertionError as exc:  # the data is verified already; say so rather than lose the figures
                progress(f"{b.log_path.name}: {exc}; killed")
        ns.stop()
        pg.stop()
    return {"published": total, "acknowledged": len(tally.acknowledged), **figures, "seed": seed,
            "backend_kills": kills, "server_restarts": 2}


def run_chaos(*, events: int, kills: int, seed: int | None) -> None:
    seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
    print(f"chaos: {events:,} events, {kills} backend kills, seed {seed}", flush=True)
    with tempfile.TemporaryDirectory(prefix="switchboard-chaos-") as tmp:
        figures = uvloop.run(_chaos(events, kills, seed, Path(tmp)))
    ok = figures["lost"] == figures["applied_twice"] == figures["mismatched_journeys"] == 0
    print(("PASS" if ok else "FAIL") + f": lost {figures['lost']}, applied twice {figures['applied_twice']},"
          f" journeys differing from the reference merge {figures['mismatched_journeys']}", flush=True)
    report(figures)
    if not ok:
        sys.exit(1)
