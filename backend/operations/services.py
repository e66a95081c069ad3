"""Flow and capacity per site, computed from journey state and the latest capacity events.

Rates look at the last `RATE_WINDOW_MIN` minutes and percentiles at the last `PERCENTILE_WINDOW`, by
upstream event time; stage counts cover journeys updated within the last day. The share served within
target is of the calls in the last `PERCENTILE_WINDOW`, each against its site's and service's target;
no-show and cancellation rates are of the last day's journeys that ended (completed, no-show, cancelled).
"""

from __future__ import annotations

from bisect import bisect_right
from datetime import datetime, timedelta

import asyncpg
import msgspec

from backend.operations.schemas import FlowMinute, SiteCapacity, SiteFlow, SiteFlowHistory
from backend.reports.targets import target_sql, wait_sql

RATE_WINDOW_MIN = 15
PERCENTILE_WINDOW = "60 minutes"
_ENDED = "('completed', 'no_show', 'cancelled')"


_FLOW_SQL = f"""
WITH scoped AS (  -- read twice, so kept: its columns only, never the journeys' whole state (spilled to disk)
    SELECT site, stage, arrived_at, waiting_at, called_at, in_service_at, finished_at,
           CASE WHEN called_at > now() - interval '{PERCENTILE_WINDOW}' THEN state->'service'->>1 END
               AS service
    FROM journeys WHERE ($1::text[] IS NULL OR site = ANY($1)) AND updated_at > now() - interval '1 day'
), stage_counts AS (  -- counted once for every site, not once per site over all sites' journeys
    SELECT site, jsonb_object_agg(stage, n) AS stages
    FROM (SELECT site, stage, count(*) AS n FROM scoped GROUP BY site, stage) c
    GROUP BY site
), measures AS (
    SELECT site,
           count(*) FILTER (WHERE arrived_at > now() - interval '{RATE_WINDOW_MIN} minutes')
               / {RATE_WINDOW_MIN}.0 AS arrivals_per_min,
           count(*) FILTER (WHERE stage = 'completed' AND finished_at > now() - interval
               '{RATE_WINDOW_MIN} minutes')
               / {RATE_WINDOW_MIN}.0 AS completions_per_min,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM called_at - coalesce(waiting_at,
               arrived_at)))
               FILTER (WHERE called_at > now() - interval '{PERCENTILE_WINDOW}') AS wait_p50_s,
           percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM called_at - coalesce(waiting_at,
               arrived_at)))
               FILTER (WHERE called_at > now() - interval '{PERCENTILE_WINDOW}') AS wait_p90_s,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - in_service_at))
               FILTER (WHERE stage = 'completed' AND finished_at > now() - interval '{PERCENTILE_WINDOW}') AS
                   service_p50_s,
           (avg(({wait_sql("s")} <= {target_sql("$2::jsonb", "s", service="s.service")})::int)
               FILTER (WHERE called_at > now() - interval '{PERCENTILE_WINDOW}'))::float8 AS within_target,
           count(*) FILTER (WHERE stage = 'no_show')::float8
               / nullif(count(*) FILTER (WHERE stage IN {_ENDED}), 0) AS no_show_rate,
           count(*) FILTER (WHERE stage = 'cancelled')::float8
               / nullif(count(*) FILTER (WHERE stage IN {_ENDED}), 0) AS cancellation_rate
    FROM scoped s
    GROUP BY site
)
SELECT * FROM measures JOIN stage_counts USING (site)
ORDER BY site
"""


async def flow(conn: asyncpg.Connection, sites: list[str] | None, targets: str) -> list[SiteFlow]:
    """Each site's flow now; `targets`: the sites' wait targets (`SiteDirectory.targets_document`)."""
    return [
        SiteFlow(site=r["site"], stages=msgspec.json.decode(r["stages"]) if r["stages"] else {},
                 arrivals_per_min=float(r["arrivals_per_min"]),
                 completions_per_min=float(r["completions_per_min"]),
                 wait_p50_s=r["wait_p50_s"], wait_p90_s=r["wait_p90_s"], service_p50_s=r["service_p50_s"],
                 within_target=r["within_target"], no_show_rate=r["no_show_rate"],
                 cancellation_rate=r["cancellation_rate"])
        for r in await conn.fetch(_FLOW_SQL, sites, targets)
    ]


_HISTORY_SQL = """
SELECT site, arrived_at, CASE WHEN stage = 'completed' THEN finished_at END AS completed_at
FROM journeys
WHERE ($1::text[] IS NULL OR site = ANY($1))
  AND (arrived_at > $2 OR (stage = 'completed' AND finished_at > $2))
"""


async def flow_history(conn: asyncpg.Connection, sites: list[str] | None, minutes: int,
                       now: datetime) -> list[SiteFlowHistory]:
    """Per site, one point per minute for the last `minutes`, each the rate over the window before it."""
    last = now.replace(second=0, microsecond=0)
    first = last - timedelta(minutes=minutes - 1)
    window = timedelta(minutes=RATE_WINDOW_MIN)
    times: dict[str, tuple[list[datetime], list[datetime]]] = {}
    for r in await conn.fetch(_HISTORY_SQL, sites, first - window):
        arrivals, completions = times.setdefault(r["site"], ([], []))
        if r["arrived_at"] is not None:
            arrivals.append(r["arrived_at"])
        if r["completed_at"] is not None:
            completions.append(r["completed_at"])

    def rate(sorted_times: list[datetime], minute: datetime) -> float:
        return (bisect_right(sorted_times, minute) - bisect_right(sorted_times,
                                                                  minute - window)) / RATE_WINDOW_MIN

    history = []
    for site in sorted(times):
        arrivals, completions = (sorted(t) for t in times[site])
        points = [FlowMinute(minute=m, arrivals_per_min=rate(arrivals, m),
                             completions_per_min=rate(completions, m))
                  for m in (first + timedelta(minutes=n) for n in range(minutes))]
        history.append(SiteFlowHistory(site=site, points=points))
    return history


_CAPACITY_SQL = f"""
SELECT c.*,
       (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - in_service_at))
          FROM journeys j WHERE j.site = c.site AND j.stage = 'completed'
           AND j.finished_at > now() - interval '{PERCENTILE_WINDOW}') AS service_p50_s
FROM capacity c
WHERE $1::text[] IS NULL OR c.site = ANY($1)
ORDER BY c.site
"""


async def capacity(conn: asyncpg.Connection, sites: list[str] | None) -> list[SiteCapacity]:
    items = []
    for r in await conn.fetch(_CAPACITY_SQL, sites):
        open_ = r["counters_open"]
        service_s = r["service_p50_s"]
        items.append(SiteCapacity(
            site=r["site"], counters_open=open_, counters_busy=r["counters_busy"],
            staff_on_duty=r["staff_on_duty"], queue_length=r["queue_length"],
            # the queue drains at one service time per open counter
            est_wait_s=None if service_s is None else r["queue_length"] * service_s / max(open_, 1),
            utilisation=r["counters_busy"] / open_ if open_ else None, updated_at=r["updated_at"],
        ))
    return items
