"""Simulated time: durations are given in simulated seconds and pass `speed` times faster.

Events carry the real wall-clock time, so the backend's per-minute rates and waits stay honest;
`speed` only compresses how long things take.
"""

from __future__ import annotations

import asyncio
import random

# Mean service time in minutes by service type.
SERVICES: dict[str, float] = {"passport": 12.0, "benefits": 20.0, "licence": 8.0, "tax": 15.0}


class Pace:
    def __init__(self, speed: float, rng: random.Random) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self.random = rng

    def real(self, sim_seconds: float) -> float:
        return sim_seconds / self.speed

    async def sleep(self, sim_seconds: float) -> None:
        await asyncio.sleep(self.real(sim_seconds))

    def service_seconds(self, service: str) -> float:
        """Service time: log-normal around the service's mean, as service times usually are."""
        mean = SERVICES.get(service, 12.0) * 60
        return min(self.random.lognormvariate(0, 0.4), 3.0) * mean
