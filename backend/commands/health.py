"""System health from connector heartbeats (CONTRACT section 6): what the relay holds commands for."""

from __future__ import annotations

import asyncpg

MISSED_INTERVALS = 3


async def down_systems(conn: asyncpg.Connection, heartbeat_interval_s: float) -> set[str]:
    """Systems none of whose connectors is alive: each reports its upstream down or missed three heartbeats.

    A system that never sent a heartbeat is not known to be down, so its commands still go out.
    """
    rows = await conn.fetch(
        "SELECT system FROM heartbeats GROUP BY system"
        " HAVING NOT bool_or(upstream <> 'down' AND seen_at > now() - make_interval(secs => $1))",
        heartbeat_interval_s * MISSED_INTERVALS)
    return {r["system"] for r in rows}
