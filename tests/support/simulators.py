"""The simulated systems behind real connector runtimes, and reading their journeys back."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from backend.settings import BackendSettings
from connectors.sdk import ConnectorRuntime
from connectors.sim.pace import Pace
from connectors.sim.queue import Queue
from connectors.sim.system import SimulatedSystem


@contextlib.asynccontextmanager
async def running(settings: BackendSettings, folder: Path, *systems: SimulatedSystem) -> AsyncIterator[None]:
    """The simulated systems behind their connector runtimes, with no branch network driving them."""
    runtimes = [ConnectorRuntime(s, nats_url=settings.bus.nats_url, data_dir=folder, heartbeat_interval=1,  # type: ignore[arg-type]
                                 creds=settings.bus.nats_creds) for s in systems]
    for runtime in runtimes:
        await runtime.start()
    try:
        async with asyncio.timeout(30):
            await asyncio.gather(*(r.ready.wait() for r in runtimes))
        yield
    finally:
        await asyncio.gather(*(r.stop() for r in runtimes))
        await _forget_heartbeats(settings, [s.name for s in systems])


async def _forget_heartbeats(settings: BackendSettings, connectors: list[str]) -> None:
    """A stopped simulator must not leave its system `down` (and its commands held) for the tests after it:
    heartbeats live in the session's shared database. Twice, for a last heartbeat still being applied."""
    conn = await asyncpg.connect(settings.database.database_url)
    try:
        for pause in (1.0, 0.0):
            await conn.execute("DELETE FROM heartbeats WHERE connector = ANY($1::text[])", connectors)
            await asyncio.sleep(pause)
    finally:
        await conn.close()


def still_queue(*sites: str) -> Queue:
    """A queue with no counter open: nobody is called unless the test says so."""
    return Queue(sites=list(sites), pace=Pace(1.0, random.Random(1)), counters=(0, 0))


async def journey_of(api: httpx.AsyncClient, headers: dict[str, str], ref: str) -> dict[str, Any] | None:
    items = (await api.get("/api/v1/journeys", params={"ref": ref}, headers=headers)).json()["items"]
    return items[0] if items else None


async def waiting(api: httpx.AsyncClient, headers: dict[str, str], ref: str) -> dict[str, Any] | None:
    """The journey of a ticket the queue issued, once both of its events are applied."""
    journey = await journey_of(api, headers, ref)
    return journey if journey and journey["stage"] == "waiting" else None
