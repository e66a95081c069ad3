"""Flow's figures from a day of journeys with states of realistic size: each call judged against its own
service's target, and the query keeping only the columns it needs (it kept each journey's whole state, and
spilled it to disk every round)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import asyncpg
import pytest

from backend.db import migrate
from backend.operations.services import _FLOW_SQL, flow
from backend.sites.config import SitesSection, parse_sites
from tools.bench.common import scratch_database

JOURNEYS = 8_000  # of the day, each with 1.5 kB of state: 12 MB, three times Postgres's default work_mem

# every journey called within the hour after a wait of 1,000 s; even ones for a passport, odd ones for tax
_DAY = """
INSERT INTO journeys (id, site, stage, state, arrived_at, waiting_at, called_at, updated_at)
SELECT gen_random_uuid(), 'north', 'called',
       jsonb_build_object('service',
                          jsonb_build_array('k', CASE WHEN n % 2 = 0 THEN 'passport' ELSE 'tax' END),
                          'notes', jsonb_build_array('k', repeat('x', 1500))),
       t - interval '1000 seconds', t - interval '1000 seconds', t, t
FROM (SELECT n, now() - (n % 50) * interval '1 minute' AS t FROM generate_series(1, $1) n) s
"""
# a passport's wait may be 1,200 s, any other service's 600 s
_TARGETS = parse_sites("[defaults]\nwait_target_s = 600\nservice_targets_s = { passport = 1200 }\n",
                       SitesSection()).targets_document


@pytest.fixture(scope="module")
async def conn(server_urls: dict[str, str]) -> AsyncIterator[asyncpg.Connection]:
    async with scratch_database(server_urls["database_url"], "flow") as url:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
            await conn.execute(_DAY, JOURNEYS)
            await conn.execute("VACUUM ANALYZE journeys")
            yield conn
        finally:
            await conn.close()


async def test_flow_judges_each_call_against_its_service_s_target(conn):
    [north] = await flow(conn, ["north"], _TARGETS)
    assert north.stages == {"called": JOURNEYS}
    assert north.within_target == 0.5  # the passports' 1,000 s are within 1,200; tax's are over 600
    assert north.wait_p50_s == pytest.approx(1000)


async def test_flow_spills_nothing_to_disk_however_large_the_journeys_states(conn):
    [plan] = json.loads(await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {_FLOW_SQL}", ["north"],
                                            _TARGETS))
    assert plan["Plan"]["Temp Written Blocks"] == 0, plan["Plan"]
