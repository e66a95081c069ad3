"""Figures no single request or batch sees, sampled for /metrics: the apply consumer's lag and the outbox
depth."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import nats.errors
from nats.js import JetStreamContext

from backend import metrics
from backend.messaging import APPLY_CONSUMER, EVENTS_STREAM

log = logging.getLogger(__name__)


class MetricsSampler:
    def __init__(self, pool: asyncpg.Pool, js: JetStreamContext, *, interval_s: float) -> None:
        self.pool = pool
        self.js = js
        self.interval_s = interval_s

    async def run(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(self.interval_s)

    async def sample(self) -> None:
        """One reading of each; a server that does not answer leaves its gauges as they were."""
        try:
            info = await self.js.consumer_info(EVENTS_STREAM, APPLY_CONSUMER, timeout=2)
            metrics.CONSUMER_PENDING.set(info.num_pending or 0)
            metrics.CONSUMER_ACK_PENDING.set(info.num_ack_pending or 0)
        except (nats.errors.Error, TimeoutError) as exc:
            log.debug("consumer lag not sampled: %s", type(exc).__name__)
        try:
            async with self.pool.acquire(timeout=2) as conn:
                # the predicate of the outbox's partial index: only unsettled rows are read
                rows = await conn.fetch(
                    "SELECT status, count(*) AS n FROM commands WHERE status IN ('pending', 'held', 'sent')"
                    " GROUP BY status", timeout=2)
            counts = {r["status"]: r["n"] for r in rows}
            for status in metrics.OUTBOX_STATUSES:
                metrics.OUTBOX_COMMANDS.labels(status).set(counts.get(status, 0))
        except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
            log.debug("outbox depth not sampled: %s", type(exc).__name__)
