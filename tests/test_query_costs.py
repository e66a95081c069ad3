"""What runs every second reads what is current, not the history: the relay's tick neither the settled
commands nor the backlog a down system holds, the live flow and capacity not the journeys of past days,
the failure-rate alert rule not the failures of past days. Counted in pages Postgres touches (EXPLAIN
BUFFERS), which no load on the machine changes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from backend.alerts.conditions import FAILURE_RATE_SQL
from backend.commands.lifecycle import HOLD
from backend.commands.relay import DUE, SYSTEMS_DUE
from backend.db import migrate
from backend.operations.services import _CAPACITY_SQL, _FLOW_SQL
from backend.reconciliation.runs import STORE_FINDINGS_SQL
from backend.reconciliation.scheduler import SITES_BY_LAST_RUN_SQL
from tools.bench.common import scratch_database

HISTORY, BACKLOG, WAITING = 30_000, 20_000, 30
PAST_JOURNEYS, TODAY = 40_000, 40
PAST_FAILURES, RECENT_FAILURES = 30_000, 12
RUN_SITES, RUNS = 50, 36_000  # a month of runs of 50 sites by 5 systems, every 30 min or so

_INSERT = """
INSERT INTO commands (id, rule, system, command, journey_id, refs, site, data, status, next_at)
SELECT gen_random_uuid(), 'rule', $1, 'ticket.call', gen_random_uuid(), '{}', 'site', '{}', $2,
       now() - make_interval(mins => $3)
FROM generate_series(1, $4)
"""
_JOURNEYS = """
INSERT INTO journeys (id, site, stage, state, arrived_at, waiting_at, called_at, in_service_at, finished_at,
                      created_at, updated_at)
SELECT gen_random_uuid(), 'north', $1, '{}', t, t, t, t, CASE WHEN $1 = 'completed' THEN t END, t, t
FROM (SELECT now() - make_interval(mins => $2) AS t FROM generate_series(1, $3)) times
"""
_FAILURES = """
INSERT INTO failures (dedupe_key, kind, site, reason, first_at, last_at, payload)
SELECT gen_random_uuid()::text, 'invalid_event', 'north', 'a reason', t, t, '{}'
FROM (SELECT now() - make_interval(mins => $1) AS t FROM generate_series(1, $2)) times
"""


@pytest.fixture(scope="module")
async def conn(server_urls: dict[str, str]) -> AsyncIterator[asyncpg.Connection]:
    """Commands: settled history first, then a down system's held backlog, then a live system's few due
    commands. Journeys: a month of finished ones, then today's few."""
    async with scratch_database(server_urls["database_url"], "costs") as url:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
            for system in ("appointments", "crm", "queue"):
                await conn.execute(_INSERT, system, "ok", 60, HISTORY // 3)
            await conn.execute(_INSERT, "crm", "held", 60, BACKLOG)
            await conn.execute(_INSERT, "queue", "pending", 0, WAITING)
            await conn.execute(_JOURNEYS, "completed", 30 * 24 * 60, PAST_JOURNEYS)
            await conn.execute(_JOURNEYS, "waiting", 5, TODAY)
            await conn.execute(_FAILURES, 7 * 24 * 60, PAST_FAILURES)
            await conn.execute(_FAILURES, 1, RECENT_FAILURES)
            await conn.execute(
                "INSERT INTO reconciliation_runs (system, site, day, trigger, status, started_at)"
                " SELECT 'system-' || (g % 5), 'run-site-' || (g % $1), current_date, 'schedule', 'done',"
                " now() - make_interval(secs => g * 60) FROM generate_series(1, $2) g", RUN_SITES, RUNS)
            await conn.execute(  # today, a journey at each of those sites
                "INSERT INTO journeys (id, site, stage, state, created_at, updated_at) SELECT"
                " gen_random_uuid(), 'run-site-' || g, 'waiting', '{}', now(), now()"
                " FROM generate_series(0, $1 - 1) g", RUN_SITES)
            await conn.execute("VACUUM ANALYZE reconciliation_runs")
            await conn.execute("VACUUM ANALYZE failures")
            await conn.execute("VACUUM ANALYZE commands")
            await conn.execute("VACUUM ANALYZE journeys")
            yield conn
        finally:
            await conn.close()


async def pages(conn: asyncpg.Connection, sql: str, *args: Any) -> int:
    """The shared buffers one run of `sql` touched (in a transaction rolled back: HOLD changes rows)."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        [plan] = json.loads(await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {sql}", *args))
    finally:
        await transaction.rollback()
    top = plan["Plan"]
    return int(top["Shared Hit Blocks"] + top["Shared Read Blocks"])


async def test_the_relay_finds_only_the_live_system_with_commands_due(conn):
    assert [r["system"] for r in await conn.fetch(SYSTEMS_DUE, ["crm"])] == ["queue"]
    assert [r["system"] for r in await conn.fetch(SYSTEMS_DUE, [])] == ["crm", "queue"]
    due = await conn.fetch(DUE, "queue", 200, [])
    assert len(due) == WAITING and [r["seq"] for r in due] == sorted(r["seq"] for r in due)
    assert len(await conn.fetch(DUE, "crm", 200, [])) == 200


async def test_a_tick_touches_pages_for_what_is_waiting_not_for_the_backlog(conn):
    table = await conn.fetchval("SELECT relpages FROM pg_class WHERE relname = 'commands'")
    assert table > 400  # the history and the backlog: what a lookup that reads them would touch
    touched = {
        "systems due": await pages(conn, SYSTEMS_DUE, ["crm"]),
        "hold the down system's new commands": await pages(conn, HOLD, ["crm"]),
        "the live system's due commands": await pages(conn, DUE, "queue", 200, []),
        "the returning system's next batch": await pages(conn, DUE, "crm", 200, []),
    }
    # a batch of 200 touches its rows' pages, their index pages and one probe of the journey index each
    assert all(count < 800 for count in touched.values()), touched
    assert touched["systems due"] < 30 and touched["hold the down system's new commands"] < 30, touched
    assert touched["the live system's due commands"] < 150, touched


async def test_flow_and_capacity_read_today_s_journeys_not_the_month_before(conn):
    assert await conn.fetchval("SELECT relpages FROM pg_class WHERE relname = 'journeys'") > 400
    [north] = await conn.fetch(_FLOW_SQL, ["north"], "{}")
    assert north["stages"] == f'{{"waiting": {TODAY}}}'
    touched = {
        "flow of the changed sites (live, every second)": await pages(conn, _FLOW_SQL, ["north"], "{}"),
        "flow of every site": await pages(conn, _FLOW_SQL, None, "{}"),
        "capacity": await pages(conn, _CAPACITY_SQL, ["north"]),
    }
    assert all(count < 60 for count in touched.values()), touched


async def test_the_failure_rate_rule_reads_its_window_not_the_history(conn):
    assert await conn.fetchval("SELECT relpages FROM pg_class WHERE relname = 'failures'") > 300
    assert [tuple(r) for r in await conn.fetch(FAILURE_RATE_SQL, 300)] == [("north", RECENT_FAILURES)]
    assert await pages(conn, FAILURE_RATE_SQL, 300) < 30


async def test_the_reconciliation_round_finds_each_site_s_last_run_not_every_run(conn):
    assert await conn.fetchval("SELECT relpages FROM pg_class WHERE relname = 'reconciliation_runs'") > 300
    sites = [r["site"] for r in await conn.fetch(SITES_BY_LAST_RUN_SQL)]
    # north was never reconciled; then the site whose latest run is oldest (run g is site g % 50's, g minutes
    # ago: site 0's latest is run 50, the oldest of the latest ones)
    assert sites[0] == "north" and sites[1] == "run-site-0" and len(sites) == RUN_SITES + 1
    assert await pages(conn, SITES_BY_LAST_RUN_SQL) < 400


def _rows_handled(node: dict[str, Any]) -> int:
    """Rows every node of a plan produced, over all its loops: what the statement did, whatever it cost."""
    own = int(node["Actual Rows"] * node["Actual Loops"])
    return own + sum(_rows_handled(n) for n in node.get("Plans", []))


async def test_storing_a_fallback_s_end_findings_is_linear_in_findings_and_ledger(conn):
    """Each finding was matched against the whole ledger of the site's fallback (findings × steps)."""
    async def handled(n: int) -> int:
        site = f"costs-{n}"
        transaction = conn.transaction()
        await transaction.start()
        try:
            fallback = await conn.fetchval("INSERT INTO fallbacks (site, system, reason, started_by) VALUES"
                                           " ($1, 'queue', 'down', 'floor1') RETURNING id", site)
            await conn.execute("INSERT INTO fallback_ledger (fallback_id, seq, action, ref, event_source,"
                               " event_id, actor, data) SELECT $1, g, 'call', 'queue:L-' || g, '/manual/x',"
                               " 'e-' || g, 'floor1', '{}' FROM generate_series(1, $2) g", fallback, n)
            run = await conn.fetchval("INSERT INTO reconciliation_runs (system, site, day, trigger) VALUES"
                                      " ('queue', $1, current_date, 'fallback_end') RETURNING id", site)
            refs = [f"queue:F-{i}" for i in range(n)]
            args = (run, "queue", site, [f"k-{site}-{r}" for r in refs], refs, [None] * n,
                    ["missing_here"] * n, [None] * n, ["null"] * n, ["null"] * n, [None] * n, ["null"] * n)
            [plan] = json.loads(await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {STORE_FINDINGS_SQL}",
                                                    *args))
            return _rows_handled(plan["Plan"])
        finally:
            await transaction.rollback()

    small, large = await handled(250), await handled(1000)
    assert large < 6 * small, (small, large)  # four times the input: about four times the work, not sixteen
