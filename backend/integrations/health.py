"""Integration health (CONTRACT section 6): the one notion of `up`, `degraded` and `down` per system.

A connector is alive when its last heartbeat is less than three intervals old.
- down: no alive connector of the system reports its upstream `up` or `degraded`: every connector
  has missed three heartbeats, or every one still talking reports its upstream down. The relay holds
  the system's commands.
- degraded: not down, and an alive connector reports its upstream degraded; or the system's commands
  are in trouble: at least `TROUBLE_MIN` failed, unavailable or unanswered in the last minute, and
  more of them than commands answered `ok`.
- up: otherwise, including a system that never sent a heartbeat (its commands still go out).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Literal

import asyncpg
import msgspec

from backend.integrations import pace as pacing

MISSED_INTERVALS = 3
TROUBLE_MIN = 3

Status = Literal["up", "degraded", "down"]


class Health(msgspec.Struct, kw_only=True):
    system: str
    status: Status
    reason: str
    last_heartbeat_at: datetime | None


async def down_systems(conn: asyncpg.Connection, heartbeat_interval_s: float) -> set[str]:
    """The systems that are down (the relay asks this every round, so it is one cheap query)."""
    rows = await conn.fetch(
        "SELECT system FROM heartbeats GROUP BY system"
        " HAVING NOT bool_or(upstream <> 'down' AND seen_at > now() - make_interval(secs => $1))",
        heartbeat_interval_s * MISSED_INTERVALS)
    return {r["system"] for r in rows}


_HEARTBEATS_SQL = """
SELECT system, max(seen_at) AS last_seen, bool_or(alive) AS any_alive,
       bool_or(alive AND upstream <> 'down') AS serving,
       min(connector) FILTER (WHERE alive AND upstream = 'degraded') AS degraded_by
FROM (SELECT *, seen_at > now() - make_interval(secs => $1) AS alive FROM heartbeats) h
GROUP BY system
"""


async def evaluate(conn: asyncpg.Connection, systems: Iterable[str],
                   heartbeat_interval_s: float) -> list[Health]:
    """The health of `systems` and of every system that sent heartbeats, by name."""
    silent_after = heartbeat_interval_s * MISSED_INTERVALS
    beats = {r["system"]: r for r in await conn.fetch(_HEARTBEATS_SQL, silent_after)}
    names = sorted(set(systems) | beats.keys())
    paces = await pacing.read(conn, names)
    answered_ok = {r["system"]: r["n"] for r in await conn.fetch(
        "SELECT system, count(*) AS n FROM commands WHERE system = ANY($1::text[]) AND status = 'ok'"
        " AND updated_at > now() - make_interval(secs => $2) GROUP BY system", names,
        pacing.TROUBLE_WINDOW_S)}
    decided = []
    for system in names:
        beat = beats.get(system)
        trouble = sum(paces[system].recent_trouble().values()) if system in paces else 0
        status: Status = "up"
        if beat is None:
            reason = "no heartbeat received yet"
        elif not beat["serving"]:
            status = "down"
            reason = ("every connector reports its upstream down" if beat["any_alive"]
                      else f"no heartbeat for more than {silent_after:g}s ({MISSED_INTERVALS} intervals)")
        elif beat["degraded_by"] is not None:
            status, reason = "degraded", f"connector {beat['degraded_by']} reports its upstream degraded"
        else:
            reason = "heartbeats on time"
        if status == "up" and trouble >= TROUBLE_MIN and trouble > answered_ok.get(system, 0):
            status = "degraded"
            reason = (f"commands in trouble: {trouble} failed, unavailable or unanswered in the last minute,"
                      f" {answered_ok.get(system, 0)} ok")
        decided.append(Health(system=system, status=status, reason=reason,
                              last_heartbeat_at=beat["last_seen"] if beat else None))
    return decided
