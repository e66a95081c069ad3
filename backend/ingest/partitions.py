"""Month partitions of `events` (sql/007): the coming months exist before any event needs them.

The backend's role may not create tables: sql/011's ensure_coming_event_partitions does it with the
owner's rights, for the coming months only."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

log = logging.getLogger(__name__)

MONTHS_AHEAD = 3
_DAY_S = 86_400.0


async def ensure_partitions(pool: asyncpg.Pool, months_ahead: int = MONTHS_AHEAD) -> int:
    async with pool.acquire() as conn:
        created: int = await conn.fetchval("SELECT ensure_coming_event_partitions($1)", months_ahead)
    if created:
        log.info("created %d month partitions of events", created)
    return created


async def keep_partitions(pool: asyncpg.Pool, interval_s: float = _DAY_S) -> None:
    """Daily, so a backend running for months never lets events fall into the default partition."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await ensure_partitions(pool)
        except (asyncpg.PostgresError, OSError) as exc:
            log.warning("event partitions not checked (%s); next try in a day", type(exc).__name__)
