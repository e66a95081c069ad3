"""The live service of one backend replica: its hub on the NATS bus and the feed of applied batches."""

from __future__ import annotations

import asyncio

import asyncpg

from backend.ingest.apply import Outcome
from backend.live.bus import LiveBus
from backend.live.feed import JourneyFeed
from backend.live.hub import LiveHub
from backend.live.sources import snapshot_readers
from backend.sites.config import SiteDirectory
from switchboard.waits import stop_tasks


class LiveService:
    def __init__(self, hub: LiveHub, pool: asyncpg.Pool, bus: LiveBus, sites: SiteDirectory) -> None:
        self.pool = pool  # each client's snapshots are read from it
        self.snapshots = snapshot_readers(sites.targets_document)
        self.hub = hub
        self.feed = JourneyFeed(pool, bus, sites.targets_document)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.hub.start()
        self._task = asyncio.create_task(self.feed.run(), name="live-feed")

    async def on_applied(self, outcome: Outcome) -> None:
        await self.feed.on_applied(outcome)

    async def stop(self) -> None:
        if self._task is not None:
            await stop_tasks([self._task])
        await self.hub.stop()
