"""The daily roll-up: per site and day (midnight to midnight in the site's own time zone) what happened,
computed from journeys, failures and drift, and upserted by (site, day) so that computing a day again
replaces its row, whichever replica does it."""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta

import asyncpg

from backend.db import lock_key
from backend.reports.schemas import DailyReport
from backend.reports.targets import target_sql, wait_sql
from backend.sites.config import SiteDirectory

log = logging.getLogger(__name__)
_LOCK = lock_key("daily reports")

# $1 site, $2 start, $3 end (the site's midnights), $4 targets document
_ROLL_UP_SQL = f"""
INSERT INTO daily_reports (site, day, arrivals, served, no_shows, cancellations, wait_p50_s, wait_p90_s,
                           within_target, failures, drift, computed_at)
SELECT $1, $5::date,
  (SELECT count(*) FROM journeys j WHERE j.site = $1 AND j.arrived_at >= $2 AND j.arrived_at < $3),
  (SELECT count(*) FROM journeys j WHERE j.site = $1 AND j.stage = 'completed' AND j.finished_at >= $2
     AND j.finished_at < $3),
  (SELECT count(*) FROM journeys j WHERE j.site = $1 AND j.stage = 'no_show' AND j.finished_at >= $2
     AND j.finished_at < $3),
  (SELECT count(*) FROM journeys j WHERE j.site = $1 AND j.stage = 'cancelled' AND j.finished_at >= $2
     AND j.finished_at < $3),
  w.p50, w.p90, w.within,
  (SELECT count(*) FROM failures f WHERE f.site = $1 AND f.first_at >= $2 AND f.first_at < $3),
  (SELECT count(*) FROM drift_items d WHERE d.site = $1 AND d.detected_at >= $2 AND d.detected_at < $3),
  now()
FROM (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY {wait_sql()}) AS p50,
             percentile_cont(0.9) WITHIN GROUP (ORDER BY {wait_sql()}) AS p90,
             avg(({wait_sql()} <= {target_sql("$4::jsonb")})::int) AS within
      FROM journeys j WHERE j.site = $1 AND j.called_at >= $2 AND j.called_at < $3) w
ON CONFLICT (site, day) DO UPDATE SET
  arrivals = EXCLUDED.arrivals, served = EXCLUDED.served, no_shows = EXCLUDED.no_shows,
  cancellations = EXCLUDED.cancellations, wait_p50_s = EXCLUDED.wait_p50_s, wait_p90_s = EXCLUDED.wait_p90_s,
  within_target = EXCLUDED.within_target, failures = EXCLUDED.failures, drift = EXCLUDED.drift,
  computed_at = EXCLUDED.computed_at
"""

# the sites that had anything happen since `$1`: the ones whose recent days need (re)computing
_ACTIVE_SITES_SQL = """
SELECT site FROM journeys WHERE updated_at >= $1
UNION SELECT site FROM failures WHERE last_at >= $1 AND site IS NOT NULL
UNION SELECT site FROM drift_items WHERE updated_at >= $1
"""


async def roll_up(conn: asyncpg.Connection, sites: SiteDirectory, site: str, day: date) -> None:
    start, end = sites.get(site).day_bounds(day)
    await conn.execute(_ROLL_UP_SQL, site, start, end, sites.targets_document, day)


async def roll_up_recent(pool: asyncpg.Pool, sites: SiteDirectory, now: datetime) -> int | None:
    """Today's and yesterday's rows (each site's own days) of every site active since yesterday began;
    the number of rows written, or None when another replica is at it."""
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK):
            return None
        try:
            names = {r["site"] for r in await conn.fetch(_ACTIVE_SITES_SQL, now - timedelta(days=2))}
            written = 0
            for site in sorted(names | set(sites.configured)):
                today = sites.get(site).day_of(now)
                for day in (today - timedelta(days=1), today):
                    await roll_up(conn, sites, site, day)
                    written += 1
            return written
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK)


async def daily(conn: asyncpg.Connection, sites: list[str] | None, first: date | None,
                last: date | None) -> list[DailyReport]:
    rows = await conn.fetch(
        "SELECT * FROM daily_reports WHERE ($1::text[] IS NULL OR site = ANY($1))"
        " AND ($2::date IS NULL OR day >= $2) AND ($3::date IS NULL OR day <= $3) ORDER BY site, day",
        sites, first, last)
    return [DailyReport(**dict(r)) for r in rows]
