"""`switchboard connector sim`: the simulated systems, each behind its own connector runtime."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

from connectors.sdk import ConnectorRuntime
from connectors.sim import build_systems
from connectors.sim.faults import Faults
from connectors.sim.network import BranchNetwork
from connectors.sim.pace import Pace
from switchboard.waits import stop_tasks


class Simulation:
    def __init__(self, *, systems: list[str], sites: list[str], speed: float, nats_url: str, data_dir: Path,
                 arrivals_per_hour: float = 20.0, faults: dict[str, Faults] | None = None,
                 seed: int | None = None,
                 heartbeat_interval: float = 5.0, services: dict[str, float] | None = None,
                 creds: dict[str, str] | None = None, tls_ca: str | None = None) -> None:
        """`creds`: each system's NATS credentials file (its connector profile's), when the server wants
        them; `tls_ca`: the NATS servers' certificate authority, for TLS."""
        rng = random.Random(seed)
        self.pace = Pace(speed, rng, services)
        self.systems = build_systems(systems, sites=sites, pace=self.pace, faults=faults, seed=seed)
        self.network = BranchNetwork(self.systems, sites=sites, pace=self.pace,
                                     arrivals_per_hour=arrivals_per_hour, rng=rng)
        self.runtimes = {
            name: ConnectorRuntime(system, nats_url=nats_url, data_dir=data_dir,
                                   heartbeat_interval=heartbeat_interval, creds=(creds or {}).get(name),
                                   tls_ca=tls_ca)
            for name, system in self.systems.items()
        }
        self._network: asyncio.Task[None] | None = None

    async def start(self) -> None:
        for runtime in self.runtimes.values():
            await runtime.start()
        self._network = asyncio.create_task(self.network.run(), name="branch-network")

    async def ready(self, timeout: float = 30.0) -> None:
        """Wait until every connector serves snapshots and consumes commands."""
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(r.ready.wait() for r in self.runtimes.values()))

    async def stop(self) -> None:
        if self._network is not None:
            await stop_tasks([self._network])
        await asyncio.gather(*(runtime.stop() for runtime in self.runtimes.values()))

    async def __aenter__(self) -> Simulation:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    def stats(self) -> dict[str, Any]:
        return {
            "journeys": self.network.journeys,
            "systems": {
                name: {"records": len(system.records), "silent_changes": system.silent_changes,
                       "spooled": self.runtimes[name].spool.pending(),
                       "commands_answered": self.runtimes[name].commands_answered,
                       "upstream": "down" if system.faults.outage else "up"}
                for name, system in self.systems.items()
            },
        }
