"""`switchboard bench publish`: the connector SDK's publish rate against a bare nats-py loop, same run.

Both sides publish the same kind of canonical events (distinct ids, so neither side's messages
are duplicates of the other's) to `svc.events.<system>.<type>` on an embedded JetStream server
of the bench's own, with `Nats-Msg-Id` and at most `max_in_flight` acks outstanding:
  - baseline: `js.publish_async` of pre-encoded bodies, then wait for every ack;
  - connector: `Publisher.emit` (encode, commit to the SQLite spool), timed until the last event
    is acknowledged and confirmed out of the spool.
Rounds alternate so both meet the same machine. The last line is one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import nats

from backend.messaging import ensure_streams
from connectors.sdk.publisher import Publisher
from connectors.sdk.spool import Spool
from switchboard import bus
from switchboard.events import CloudEvent, TicketCalled, nats_msg_id, nats_subject
from tools.embedded import EmbeddedNats

ROUNDS = 3
EMIT_BATCH = 1000


def _events(n: int) -> list[CloudEvent]:
    now = datetime.now(UTC)
    return [
        msgspec.convert({"specversion": "1.0", "id": uuid.uuid4().hex, "source": "/queue",
                         "subject": f"queue:T-{i}",
                         "time": now, "data": {"site": "bench", "counter": f"C{i % 8 + 1}"}}, TicketCalled)
        for i in range(n)
    ]


async def _baseline(js: nats.js.JetStreamContext, events: list[CloudEvent]) -> float:
    rows = [(nats_subject(e), nats_msg_id(e.source, e.id), msgspec.json.encode(e)) for e in events]
    started = time.perf_counter()
    futures = [await js.publish_async(subject, body, headers={"Nats-Msg-Id": msg_id})
               for subject, msg_id, body in rows]
    await asyncio.gather(*futures)
    return time.perf_counter() - started


async def _connector(publisher: Publisher, events: list[CloudEvent]) -> float:
    started = time.perf_counter()
    for i in range(0, len(events), EMIT_BATCH):
        await publisher.emit(events[i:i + EMIT_BATCH])
        await asyncio.sleep(0)  # an emitting connector yields to the loop between upstream batches
    if not await publisher.drain(timeout=120):
        raise RuntimeError("the connector did not get every event acknowledged")
    return time.perf_counter() - started


async def _bench(events: int, max_in_flight: int, workdir: Path, nats_fsync: bool) -> dict[str, object]:
    server = EmbeddedNats(workdir / "nats", sync_always=nats_fsync)
    server.start()
    try:
        bare = await bus.connect(server.url, "bench-publish-bare", creds=server.creds)
        sdk = await bus.connect(server.url, "bench-publish-sdk", creds=server.creds)
        js = bare.jetstream(publish_async_max_pending=max_in_flight)
        await ensure_streams(js, 120.0)
        publisher = Publisher(Spool(workdir / "spool.sqlite"), max_in_flight=max_in_flight)
        publisher.attach(sdk)
        sender = asyncio.create_task(publisher.run())
        per_round = max(1, events // ROUNDS)
        await _baseline(js, _events(min(per_round, 2000)))  # warm both paths up
        await _connector(publisher, _events(min(per_round, 2000)))
        baseline_s = connector_s = 0.0
        for round_ in range(1, ROUNDS + 1):
            b = await _baseline(js, _events(per_round))
            c = await _connector(publisher, _events(per_round))
            baseline_s, connector_s = baseline_s + b, connector_s + c
            print(f"round {round_}/{ROUNDS}: bare {per_round / b:,.0f}/s, connector {per_round / c:,.0f}/s",
                  flush=True)
        sender.cancel()
        await bare.close()
        await sdk.close()
    finally:
        server.stop()
    total = per_round * ROUNDS
    publish_per_s, baseline_per_s = total / connector_s, total / baseline_s
    return {"events": total, "max_in_flight": max_in_flight, "publish_per_s": round(publish_per_s, 1),
            "baseline_per_s": round(baseline_per_s, 1), "ratio": round(publish_per_s / baseline_per_s, 3),
            "nats_fsync": "always" if nats_fsync else "2m"}


def run_publish_bench(*, events: int, max_in_flight: int, nats_fsync: bool = True) -> None:
    print(f"publishing {events:,} events each way in {ROUNDS} alternating rounds, {max_in_flight} acks in"
          " flight",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="switchboard-bench-") as tmp:
        result = asyncio.run(_bench(events, max_in_flight, Path(tmp), nats_fsync))
    print(json.dumps(result), flush=True)
