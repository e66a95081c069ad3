"""The integration monitor: every replica re-decides health every few seconds and records it; the one
whose decision changed the stored status publishes the change on the live `integrations` topic. Every
`figures_interval_s` one replica (whichever claims the round) publishes every system's figures too,
so the board's rates and latencies move without a change of status."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from nats.js import JetStreamContext

from backend.integrations import health, services
from backend.integrations import pace as pacing
from backend.live.bus import ALL_SITES, LiveBus

log = logging.getLogger(__name__)


class IntegrationMonitor:
    def __init__(self, pool: asyncpg.Pool, js: JetStreamContext, bus: LiveBus, systems: frozenset[str], *,
                 interval_s: float, figures_interval_s: float, heartbeat_interval_s: float) -> None:
        self.pool = pool
        self.js = js
        self.bus = bus
        self.systems = systems
        self.interval_s = interval_s
        self.figures_interval_s = figures_interval_s
        self.heartbeat_interval_s = heartbeat_interval_s

    async def run(self) -> None:
        while True:
            try:
                await self.check()
            except Exception:  # the monitor outlives any one failure: Postgres or NATS away
                log.exception("integration health not checked; trying again")
            await asyncio.sleep(self.interval_s)

    async def check(self) -> list[str]:
        """Decide, record, publish what changed and the figures due; the systems published."""
        async with self.pool.acquire() as conn:
            decided = await health.evaluate(conn, self.systems, self.heartbeat_interval_s)
            changed = await services.record(conn, decided, await pacing.read(conn))
            due = await services.claim_figures(conn, changed, self.figures_interval_s)
            if due:
                await services.forget_traffic(conn)
            items = await services.integrations(conn, due,
                                                await services.consumer_lag(self.js)) if due else []
        for item in services.for_every_reader(items):
            await self.bus.publish("integrations", ALL_SITES, item.system, item)
        return due
