"""Simulated upstream systems with their own records, and a branch network that drives them."""

from __future__ import annotations

import random

from connectors.sim.appointments import Appointments
from connectors.sim.contact_center import ContactCenter
from connectors.sim.core import Core
from connectors.sim.crm import Crm
from connectors.sim.faults import Faults
from connectors.sim.network import BranchNetwork
from connectors.sim.pace import Pace
from connectors.sim.queue import Queue
from connectors.sim.system import SimulatedSystem

SYSTEMS = ("crm", "appointments", "queue", "contact_center", "core")


def build_systems(names: list[str], *, sites: list[str], pace: Pace, faults: dict[str, Faults] | None = None,
                  seed: int | None = None) -> dict[str, SimulatedSystem]:
    unknown = set(names) - set(SYSTEMS)
    if unknown:
        raise ValueError(f"no simulated system {', '.join(sorted(unknown))};"
                         f" choose from {', '.join(SYSTEMS)}")
    faults = faults or {}
    built: dict[str, SimulatedSystem] = {}
    for index, name in enumerate(names):
        kwargs = {"faults": faults.get(name), "seed": None if seed is None else seed + index}
        match name:
            case "queue":
                built[name] = Queue(sites=sites, pace=pace, **kwargs)  # type: ignore[arg-type]
            case "appointments":
                built[name] = Appointments(**kwargs)  # type: ignore[arg-type]
            case "crm":
                built[name] = Crm(**kwargs)  # type: ignore[arg-type]
            case "core":
                built[name] = Core(**kwargs)  # type: ignore[arg-type]
            case "contact_center":
                built[name] = ContactCenter(**kwargs)  # type: ignore[arg-type]
    return built


def standalone(name: str, *, sites: tuple[str, ...] = ("conformance",), speed: float = 600.0,
               arrivals_per_hour: float = 30.0) -> SimulatedSystem:
    """One simulated system, connected alone, in a fast branch network of all five (for `connector check`).

    The other four keep their records without a connector, so the one under test sees the traffic
    it would in the full network.
    """
    rng = random.Random()
    pace = Pace(speed, rng)
    systems = build_systems(list(SYSTEMS), sites=list(sites), pace=pace)
    network = BranchNetwork(systems, sites=list(sites), pace=pace, arrivals_per_hour=arrivals_per_hour,
                            rng=rng)
    system = systems[name]
    system.drivers.append(network.run)
    for other in systems.values():
        if other is not system and isinstance(other, Queue):
            system.drivers.append(other.start)  # the floor must move for anyone to be called
    return system
