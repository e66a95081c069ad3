"""The purge as a background task of every backend (one runs at a time: `purge` takes a lock)."""

from __future__ import annotations

import asyncio
import logging
import random

import asyncpg

from backend.retention.services import RetentionPolicy, purge

log = logging.getLogger(__name__)


async def run_retention(pool: asyncpg.Pool, policy: RetentionPolicy, interval_s: float) -> None:
    # a random first wait spreads replicas started together over the interval
    await asyncio.sleep(random.uniform(0, interval_s))  # noqa: S311 - jitter, not a secret
    while True:
        try:
            counts = await purge(pool, policy)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("retention purge failed, next attempt in %.0fs: %s", interval_s, exc)
        else:
            if counts and any(counts.values()):
                log.info("retention purged %s", ", ".join(f"{kind} {n}" for kind, n in counts.items()))
        await asyncio.sleep(interval_s)
