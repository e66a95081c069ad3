"""What each kind of rule sees as true now: one `Firing` per subject (a system, a site).

`since` is when the condition began, when the data knows it (a system down since, a drift item open
since, a wait past its target since); otherwise None, and the engine counts from when it first saw it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg
import msgspec

from backend.alerts.rules import DriftOpen, FailureRate, Rule, SystemDown, WaitOverTarget
from backend.sites.config import SiteDirectory

UNKNOWN_SITE = "unknown site"  # the subject of failures that name no site


class Firing(msgspec.Struct, frozen=True, kw_only=True):
    subject: str
    site: str | None  # None: concerns every site
    value: float
    threshold: float
    summary: str
    since: datetime | None = None


async def firing(conn: asyncpg.Connection, rule: Rule, sites: SiteDirectory, now: datetime) -> list[Firing]:
    match rule:
        case SystemDown():
            return await _systems_down(conn, rule, now)
        case WaitOverTarget():
            return await _waits_over_target(conn, sites, now)
        case FailureRate():
            return await _failure_rates(conn, rule)
        case DriftOpen():
            return await _drift_open(conn, rule, now)


def _minutes(delta: timedelta) -> float:
    return round(delta.total_seconds() / 60, 1)


async def _systems_down(conn: asyncpg.Connection, rule: SystemDown, now: datetime) -> list[Firing]:
    rows = await conn.fetch("SELECT system, since FROM integration_status WHERE status = 'down'")
    return [Firing(subject=r["system"], site=None, value=_minutes(now - r["since"]),
                   threshold=rule.for_minutes, since=r["since"],
                   summary=f"System {r['system']} down for {_minutes(now - r['since']):g} min")
            for r in rows]


# the earliest start of a wait still going, per site and service (journeys arrived or waiting, not yet called)
_WAITING_SQL = """
SELECT site, state->'service'->>1 AS service, min(coalesce(waiting_at, arrived_at)) AS started
FROM journeys
WHERE stage IN ('arrived', 'waiting') AND updated_at > now() - interval '1 day'
  AND coalesce(waiting_at, arrived_at) IS NOT NULL
GROUP BY 1, 2
"""


async def _waits_over_target(conn: asyncpg.Connection, sites: SiteDirectory, now: datetime) -> list[Firing]:
    worst: dict[str, tuple[datetime, float, float]] = {}  # site → (over target since, wait, target) in s
    for r in await conn.fetch(_WAITING_SQL):
        target = sites.get(r["site"]).target_for(r["service"])
        over_since = r["started"] + timedelta(seconds=target)
        if over_since <= now and (r["site"] not in worst or over_since < worst[r["site"]][0]):
            worst[r["site"]] = (over_since, (now - r["started"]).total_seconds(), target)
    return [Firing(subject=site, site=site, value=round(wait / 60, 1), threshold=round(target / 60, 1),
                   since=since, summary=f"Site {site}: a wait of {wait / 60:.0f} min, over its"
                                        f" {target / 60:g} min target")
            for site, (since, wait, target) in sorted(worst.items())]


# every round of every replica, one after another (the rules' lock): the window's rows, not the history
FAILURE_RATE_SQL = ("SELECT site, count(*) AS n FROM failures"
                    " WHERE first_at > now() - make_interval(secs => $1) GROUP BY site")


async def _failure_rates(conn: asyncpg.Connection, rule: FailureRate) -> list[Firing]:
    rows = await conn.fetch(FAILURE_RATE_SQL, rule.window_minutes * 60)
    found = []
    for r in rows:
        rate = r["n"] / rule.window_minutes
        if rate > rule.per_minute:
            subject = r["site"] or UNKNOWN_SITE
            found.append(Firing(subject=subject, site=r["site"], value=round(rate, 2),
                                threshold=rule.per_minute,
                                summary=f"Site {subject}: {rate:.1f} failures per minute over the last"
                                        f" {rule.window_minutes:g} min (limit {rule.per_minute:g})"))
    return found


async def _drift_open(conn: asyncpg.Connection, rule: DriftOpen, now: datetime) -> list[Firing]:
    rows = await conn.fetch(
        "SELECT site, count(*) AS n, min(detected_at) AS oldest FROM drift_items"
        " WHERE status IN ('open', 'repairing') GROUP BY site")
    return [Firing(subject=r["site"], site=r["site"], value=_minutes(now - r["oldest"]),
                   threshold=rule.for_minutes,
                   since=r["oldest"], summary=f"Site {r['site']}: {r['n']} drift items open, the oldest for"
                                              f" {_minutes(now - r['oldest']):g} min")
            for r in rows]
