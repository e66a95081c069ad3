"""The live service of one backend replica: its hub on the NATS bus, the feed of applied batches and
the feed of failure changes."""

from __future__ import annotations

import asyncio
import contextlib

import asyncpg
from nats.aio.client import Client as NATS

from backend.ingest.apply import Outcome
from backend.live import bus
from backend.live.failures_feed import FailureFeed
from backend.live.feed import JourneyFeed
from backend.live.hub import LiveHub


class LiveService:
    def __init__(self, nc: NATS, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.hub = LiveHub(nc)
        self.feed = JourneyFeed(pool)
        self.failures = FailureFeed(pool, self.hub)
        self._nc = nc
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.hub.start()
        bus.attach(self._nc)
        self._tasks = [asyncio.create_task(self.feed.run(), name="live-feed"),
                       asyncio.create_task(self.failures.run(), name="live-failures")]

    async def on_applied(self, outcome: Outcome) -> None:
        await self.feed.on_applied(outcome)

    async def stop(self) -> None:
        bus.attach(None)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.hub.stop()
