"""What alerting and history cost on a populated database: one alert round (all default rules), the daily
roll-up of today and yesterday, and Flow with and without its new figures.

    python -m tools.bench.alerts --journeys 200000 --sites 50
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from backend import db
from backend.alerts.engine import AlertEngine
from backend.alerts.rules import DEFAULT_RULES
from backend.live.bus import LiveBus
from backend.operations.services import flow
from backend.reports.services import roll_up_recent
from backend.sites.config import SitesSection, parse_sites
from tools.bench.common import bench_servers, progress, report, scratch_database

# journeys over the last two days, one in twenty still waiting, the rest ended one way or another
_JOURNEYS_SQL = """
INSERT INTO journeys (id, site, stage, state, arrived_at, waiting_at, called_at, finished_at, updated_at)
SELECT gen_random_uuid(), 'site-' || (n % $2),
       CASE WHEN n % 20 = 0 THEN 'waiting' WHEN n % 17 = 0 THEN 'no_show' WHEN n % 13 = 0 THEN 'cancelled'
            ELSE 'completed' END,
       jsonb_build_object('service',
                          jsonb_build_array('k', CASE WHEN n % 2 = 0 THEN 'passport' ELSE 'tax' END)),
       t, t, CASE WHEN n % 20 = 0 THEN NULL ELSE t + (n % 1500) * interval '1 second' END,
       CASE WHEN n % 20 = 0 THEN NULL ELSE t + interval '30 minutes' END, t
FROM (SELECT n, now() - (n % 2880) * interval '1 minute' AS t FROM generate_series(1, $1) n) s
"""


async def _timed(step: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await step()
    return round((time.perf_counter() - started) * 1000, 1)


async def _measure(database_url: str, journeys: int, sites: int) -> dict[str, object]:
    conn = await asyncpg.connect(database_url)
    await db.migrate(conn)
    progress(f"loading {journeys:,} journeys at {sites} sites, failures and open drift")
    await conn.execute(_JOURNEYS_SQL, journeys, sites)
    await conn.execute(
        "INSERT INTO failures (dedupe_key, kind, site, reason, payload, first_at, last_at) SELECT 'b' || n,"
        " 'invalid_event', 'site-' || (n % $1), 'bench', '{}', now() - (n % 600) * interval '1 second', now()"
        " FROM generate_series(1, 5000) n", sites)
    run = await conn.fetchval("INSERT INTO reconciliation_runs (system, site, day, trigger) VALUES"
                              " ('queue', 'site-0', current_date, 'on_demand') RETURNING id")
    await conn.execute(
        "INSERT INTO drift_items (dedupe_key, run_id, system, site, ref, kind, detected_at)"
        " SELECT 'd' || n, $1, 'queue', 'site-' || (n % $2), 'queue:' || n, 'stale',"
        " now() - interval '2 hours' FROM generate_series(1, 500) n", run, sites)
    await conn.execute("ANALYZE")
    await conn.close()
    directory = parse_sites("[defaults]\nwait_target_s = 600\nservice_targets_s = { passport = 1200 }\n",
                            SitesSection())
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    try:
        engine = AlertEngine(pool, LiveBus(None), DEFAULT_RULES, directory, webhooks=("https://example.org/hook",),
                             interval_s=1)
        first_round = await _timed(engine.check)
        raised = await pool.fetchval("SELECT count(*) FROM alerts")
        steady = [await _timed(engine.check) for _ in range(3)]
        roll_up = await _timed(lambda: roll_up_recent(pool, directory, datetime.now(UTC)))
        async with pool.acquire() as conn:
            flows = [await _timed(lambda: flow(conn, None, directory.targets_document)) for _ in range(3)]
    finally:
        await pool.close()
    return {"journeys": journeys, "sites": sites, "alert_first_round_ms": first_round,
            "alerts_raised": raised, "alert_round_ms": min(steady), "roll_up_ms": roll_up,
            "flow_all_sites_ms": min(flows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--journeys", type=int, default=200_000)
    parser.add_argument("--sites", type=int, default=50)
    args = parser.parse_args()

    async def run(server_url: str) -> dict[str, object]:
        async with scratch_database(server_url, "alerts") as database_url:
            return await _measure(database_url, args.journeys, args.sites)

    with tempfile.TemporaryDirectory() as folder, bench_servers(Path(folder)) as urls:
        report(asyncio.run(run(urls["database_url"])))


if __name__ == "__main__":
    main()
