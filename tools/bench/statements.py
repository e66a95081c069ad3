"""Postgres time per event: the apply's statements against the bare consumer's insert, batch by batch.

Both sides apply the same `bench ingest` events, serially, in batches of the same size, on one connection
each to one fresh database, alternated batch by batch; each batch is one transaction ended by a commit.
The backend side is `apply_events` itself, each statement timed where the worker sends it (BEGIN, claim,
resolve, write, COMMIT); its Python (the merge, the rules, building and encoding the rows) is the rest of
its batch. The bare side is `bench ingest`'s pipelined consumer's statement: decode, one `INSERT … unnest`
of six columns with one key, COMMIT. Medians per event over the batches after the first two.

    python -m tools.bench.statements --events 20000 --batch 500
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from backend import db
from backend.ingest import apply
from backend.ingest.validate import Accepted, validate
from backend.routing.rules import DEFAULT_RULES, load_rules
from switchboard.events import SEED_SYSTEMS
from tools.bench.common import Meter, bench_servers, report, scratch_database
from tools.bench.ingest import make_events

_BARE_INSERT = ("INSERT INTO bare_events SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],"
                " $5::timestamptz[], $6::jsonb[]) ON CONFLICT DO NOTHING")
_NAMES = {apply._CLAIM: "claim", apply._RESOLVE: "resolve", apply._WRITE: "write"}
_WARM_BATCHES = 2


class TimedConnection(asyncpg.Connection):
    """A real connection that adds each apply statement's round trip to `spent`."""

    spent: dict[str, float]

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> list[asyncpg.Record]:
        started = time.perf_counter()
        try:
            return await super().fetch(query, *args, **kwargs)
        finally:
            name = _NAMES.get(query, "other statements")
            self.spent[name] = self.spent.get(name, 0.0) + time.perf_counter() - started


async def _backend_batch(conn: TimedConnection, events: list[Accepted],
                         rules: Any) -> dict[str, float]:
    conn.spent = {}
    started = time.perf_counter()
    transaction = conn.transaction()
    await transaction.start()
    conn.spent["BEGIN"] = time.perf_counter() - started
    await apply.apply_events(conn, events, rules=rules)
    committing = time.perf_counter()
    await transaction.commit()
    conn.spent["COMMIT"] = time.perf_counter() - committing
    whole = time.perf_counter() - started
    return {**conn.spent, "Python": whole - sum(conn.spent.values()), "whole batch": whole}


async def _bare_batch(conn: asyncpg.Connection, bodies: list[bytes]) -> dict[str, float]:
    started = time.perf_counter()
    docs = [msgspec.json.decode(body) for body in bodies]
    rows = ([d["source"] for d in docs], [d["id"] for d in docs], [d["type"] for d in docs],
            [d["subject"] for d in docs], [datetime.fromisoformat(d["time"]) for d in docs],
            [msgspec.json.encode(d["data"]).decode() for d in docs])
    decoded = time.perf_counter()
    async with conn.transaction():
        await conn.execute(_BARE_INSERT, *rows)
    done = time.perf_counter()
    return {"Python": decoded - started, "insert and COMMIT": done - decoded, "whole batch": done - started}


async def measure(database_url: str, events: int, batch: int) -> dict[str, object]:
    bodies = [body for _, body, _ in make_events(events)]
    decoded = []
    for body in bodies:
        accepted = validate(body, max_bytes=65_536, known_systems=SEED_SYSTEMS)
        assert isinstance(accepted, Accepted), accepted
        decoded.append(accepted)
    rules = load_rules(DEFAULT_RULES, SEED_SYSTEMS)
    backend = await asyncpg.connect(database_url, connection_class=TimedConnection)
    backend.spent = {}
    bare = await asyncpg.connect(database_url)
    try:
        await db.migrate(backend)
        await backend.execute("SET plan_cache_mode = force_generic_plan")  # as the apply worker plans
        await bare.execute("CREATE TABLE bare_events (source text, id text, type text, subject text,"
                           " time timestamptz, data jsonb, PRIMARY KEY (source, id))")
        per_event: dict[str, dict[str, list[float]]] = {"backend": defaultdict(list),
                                                        "bare": defaultdict(list)}
        meter = Meter("batches of both sides", len(bodies))
        for start in range(0, len(bodies), batch):
            sides = [("backend", _backend_batch(backend, decoded[start:start + batch], rules)),
                     ("bare", _bare_batch(bare, bodies[start:start + batch]))]
            for side, run in sides if (start // batch) % 2 == 0 else reversed(sides):
                spent = await run
                if start >= _WARM_BATCHES * batch:
                    size = len(bodies[start:start + batch])
                    for part, seconds in spent.items():
                        per_event[side][part].append(seconds / size * 1e6)
            meter.update(min(start + batch, len(bodies)))
    finally:
        await backend.close()
        await bare.close()
    medians = {side: {part: round(statistics.median(values), 1) for part, values in parts.items()}
               for side, parts in per_event.items()}
    for side, parts in medians.items():
        for part, micros in parts.items():
            print(f"{side:8s} {part:18s} {micros:8.1f} µs/event")
    postgres = medians["backend"]["whole batch"] - medians["backend"]["Python"]
    bare_postgres = medians["bare"]["insert and COMMIT"]
    print(f"Postgres per event: backend {postgres:.1f} µs, bare {bare_postgres:.1f} µs,"
          f" ratio {bare_postgres / postgres:.3f}")
    return {"baseline": "bare insert", "events": len(bodies), "batch": batch,
            "backend_us_per_event": medians["backend"], "bare_us_per_event": medians["bare"],
            "postgres_us_per_event": round(postgres, 1), "bare_postgres_us_per_event": bare_postgres,
            "postgres_ratio": round(bare_postgres / postgres, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()

    async def run(server_url: str) -> dict[str, object]:
        async with scratch_database(server_url, "statements") as database_url:
            return await measure(database_url, args.events, args.batch)

    with tempfile.TemporaryDirectory() as folder, bench_servers(Path(folder)) as urls:
        report(asyncio.run(run(urls["database_url"])))


if __name__ == "__main__":
    main()
