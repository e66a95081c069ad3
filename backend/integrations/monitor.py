"""The integration monitor: every replica re-decides health every few seconds and records it; the one
whose decision changed the stored status publishes the change on the live `integrations` topic."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from backend.integrations import health, services
from backend.integrations import pace as pacing
from backend.live import publish
from backend.live.bus import ALL_SITES

log = logging.getLogger(__name__)


class IntegrationMonitor:
    def __init__(self, pool: asyncpg.Pool, systems: frozenset[str], *, interval_s: float,
                 heartbeat_interval_s: float) -> None:
        self.pool = pool
        self.systems = systems
        self.interval_s = interval_s
        self.heartbeat_interval_s = heartbeat_interval_s

    async def run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:  # the monitor outlives any one failure: Postgres or NATS away
                log.exception("integration health not checked; trying again")
            await asyncio.sleep(self.interval_s)

    async def check(self) -> list[str]:
        """Decide, record, publish what changed; the systems published."""
        async with self.pool.acquire() as conn:
            decided = await health.evaluate(conn, self.systems, self.heartbeat_interval_s)
            changed = await services.record(conn, decided, await pacing.read(conn))
            current = [s for s in await services.statuses(conn) if s.system in changed] if changed else []
        for status in current:
            await publish("integrations", ALL_SITES, status.system, status)
        return changed
