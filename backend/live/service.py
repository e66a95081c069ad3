"""The live service of one backend replica: its hub on the NATS bus and the feed of applied batches."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
from nats.aio.client import Client as NATS

from backend.ingest.apply import Outcome
from backend.live import bus
from backend.live.feed import JourneyFeed
from backend.live.hub import LiveHub


class LiveService:
    def __init__(self, nc: NATS, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.hub = LiveHub(nc)
        self.feed = JourneyFeed(pool)
        self._nc = nc
        self._feed_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.hub.start()
        bus.attach(self._nc)
        self._feed_task = asyncio.create_task(self.feed.run(), name="live-feed")

    async def on_applied(self, outcome: Outcome) -> None:
        await self.feed.on_applied(outcome)

    async def stop(self) -> None:
        bus.attach(None)
        if self._feed_task is not None:
            self._feed_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._feed_task
        await self.hub.stop()
