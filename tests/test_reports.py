"""The daily roll-up (CONTRACT section 11): per site and day from real journeys, computed again without
counting twice whoever computes it, read as JSON or formula-safe CSV within the reader's sites, kept at
least 400 days."""

from __future__ import annotations

import asyncio
import csv
import io
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta

import asyncpg

from backend.reports.controllers import as_csv
from backend.reports.schemas import DailyReport
from backend.reports.services import roll_up_recent
from backend.retention.services import RetentionPolicy, purge
from backend.sites.config import load_sites
from tests.support.events import cloud_event, publish
from tests.support.settings import backend_settings
from tests.support.waits import eventually


async def _day_of(pool: asyncpg.Pool, site: str, n: int) -> bool:
    return await pool.fetchval("SELECT count(*) FROM journeys WHERE site = $1 AND stage <> 'arrived'"
                               " AND stage <> 'waiting'", site) == n


async def test_a_report_day_counts_what_happened_once_however_often_it_is_computed(api, js, pool, token, uid):
    site = f"rep-{uid}"
    now = datetime.now(UTC)
    # the session's sites have the default target of 10 minutes: one wait of 4 minutes, one of 20
    t0 = max(now - timedelta(minutes=50), now.replace(hour=0, minute=0, second=1, microsecond=0))
    step = (now - t0) / 10
    events = [
        cloud_event("customer.arrived", f"queue:A-{uid}", {"site": site}, time=t0),
        cloud_event("customer.arrived", f"queue:B-{uid}", {"site": site}, time=t0 + step),
        cloud_event("ticket.called", f"queue:A-{uid}", {"site": site, "counter": "1"}, time=t0 + step * 2),
        cloud_event("service.completed", f"queue:A-{uid}", {"site": site, "outcome": "DONE"},
                    time=t0 + step * 3),
        cloud_event("ticket.called", f"queue:B-{uid}", {"site": site, "counter": "2"}, time=t0 + step * 9),
        cloud_event("appointment.no_show", f"appointments:N-{uid}", {"site": site}, time=t0 + step * 4),
        cloud_event("appointment.cancelled", f"appointments:C-{uid}", {"site": site, "reason_code": "ILL"},
                    time=t0 + step * 5),
    ]
    for event in events:
        await publish(js, event)
    await eventually(lambda: _day_of(pool, site, 4))

    sites = load_sites()
    # two replicas at once, then again: one row per site and day, the same figures
    await eventually(lambda: roll_up_recent(pool, sites, datetime.now(UTC)))
    await asyncio.gather(*(roll_up_recent(pool, sites, datetime.now(UTC)) for _ in range(2)))
    rows = await pool.fetch("SELECT * FROM daily_reports WHERE site = $1", site)
    today = now.date()
    assert sorted(r["day"] for r in rows) == [today - timedelta(days=1), today]
    day = next(r for r in rows if r["day"] == today)
    assert (day["arrivals"], day["served"], day["no_shows"], day["cancellations"]) == (2, 1, 1, 1)
    waits = sorted([(step * 2).total_seconds(), (step * 8).total_seconds()])
    assert abs(day["wait_p50_s"] - sum(waits) / 2) < 1
    assert day["within_target"] == sum(w <= 600 for w in waits) / 2

    headers = {"Authorization": f"Bearer {token('manager', [site])}"}
    # Flow shows the same figures live: one call of the two within target, of three ended one no-show
    flows = await api.get("/api/v1/flow", params={"site": site}, headers=headers)
    assert flows.status_code == 200, flows.text
    [flow] = flows.json()["items"]
    assert flow["within_target"] == 0.5
    assert abs(flow["no_show_rate"] - 1 / 3) < 1e-9 and abs(flow["cancellation_rate"] - 1 / 3) < 1e-9
    answer = await api.get("/api/v1/reports/daily",
                           params={"site": site, "from": str(today), "to": str(today)}, headers=headers)
    assert answer.status_code == 200, answer.text
    [item] = answer.json()["items"]
    assert item["site"] == site and item["day"] == str(today) and item["served"] == 1
    assert item["within_target"] == day["within_target"]
    as_text = await api.get("/api/v1/reports/daily", params={"from": str(today - timedelta(days=1))},
                            headers={**headers, "Accept": "text/csv"})
    assert as_text.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(as_text.text)))
    assert [(r["site"], r["day"], r["arrivals"]) for r in table] == [
        (site, str(today - timedelta(days=1)), "0"), (site, str(today), "2")]


async def test_reports_answer_only_within_the_readers_sites_and_refuse_bad_ranges(api, token, uid):
    url = "/api/v1/reports/daily"
    assert (await api.get(url)).status_code == 401
    other = {"Authorization": f"Bearer {token('floor_staff', [f'other-{uid}'])}"}
    assert (await api.get(url, params={"site": f"rep-{uid}"}, headers=other)).status_code == 403
    mine = await api.get(url, headers=other)
    assert mine.status_code == 200 and all(i["site"] == f"other-{uid}" for i in mine.json()["items"])
    sre = {"Authorization": f"Bearer {token('sre')}"}
    backwards = await api.get(url, params={"from": "2026-02-01", "to": "2026-01-01"}, headers=sre)
    assert backwards.status_code == 400 and "after" in backwards.text
    too_long = await api.get(url, params={"from": "2020-01-01", "to": "2026-01-01"}, headers=sre)
    assert too_long.status_code == 400
    assert (await api.get(url, params={"from": "yesterday"}, headers=sre)).status_code == 400
    for edge in ("0001-01-01", "0002-01-01", "9999-12-31"):  # the default span reaches before year 1
        at_edge = await api.get(url, params={"to": edge}, headers=sre)
        assert at_edge.status_code == 200 and at_edge.json()["items"] == [], (edge, at_edge.text)


def test_a_report_exported_as_csv_never_starts_a_cell_with_a_formula():
    hostile = DailyReport(site="=HYPERLINK(\"http://x\")", day=date(2026, 1, 2), arrivals=1, served=1,
                          no_shows=0, cancellations=0, wait_p50_s=None, wait_p90_s=12.5, within_target=0.5,
                          failures=0, drift=0, computed_at=datetime(2026, 1, 3, tzinfo=UTC))
    [row] = list(csv.DictReader(io.StringIO(as_csv([hostile]))))
    assert row["site"] == "'=HYPERLINK(\"http://x\")"
    assert row["wait_p50_s"] == "" and row["wait_p90_s"] == "12.5"


async def test_report_rows_are_kept_400_days_and_the_floor_cannot_be_lowered(pool, uid):
    site = f"old-{uid}"
    today = datetime.now(UTC).date()
    for age in (399, 402):
        await pool.execute("INSERT INTO daily_reports (site, day, arrivals, served, no_shows, cancellations,"
                           " failures, drift) VALUES ($1, $2, 1, 1, 0, 0, 0, 0)",
                           site, today - timedelta(days=age))
    await eventually(lambda: purge(pool, RetentionPolicy.from_settings(backend_settings())))
    kept = [r["day"] for r in await pool.fetch("SELECT day FROM daily_reports WHERE site = $1", site)]
    assert kept == [today - timedelta(days=399)]
    refused = subprocess.run(
        [sys.executable, "-c", "from backend.retention.services import RetentionPolicy as P;"
         " from backend.settings import BackendSettings as S; P.from_settings(S.from_env())"],
        env={"SWITCHBOARD_RETENTION_REPORTS_DAYS": "100", "PATH": "/usr/bin"}, capture_output=True, text=True)
    assert refused.returncode != 0 and "retention_reports_days must be at least 400" in refused.stderr
