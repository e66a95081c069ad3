"""A branch network's day: customers book ahead (web, phone, branch) or walk in, arrive, are served.

The network only decides what customers do and when; each step is done in the system that owns
it, which records it and tells Switchboard. A step whose system is absent or down does not
happen, as it would not in a real branch (no booking while the appointment tool is down).
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

from connectors.sim.appointments import Appointments
from connectors.sim.contact_center import ContactCenter
from connectors.sim.core import Core
from connectors.sim.crm import Crm
from connectors.sim.pace import Pace
from connectors.sim.queue import Queue
from connectors.sim.system import SimulatedSystem


class BranchNetwork:
    def __init__(self, systems: dict[str, SimulatedSystem], *, sites: list[str], pace: Pace,
                 arrivals_per_hour: float, rng: random.Random) -> None:
        self.systems = systems
        self.sites = sites
        self.pace = pace
        self.arrivals_per_hour = arrivals_per_hour
        self.random = rng
        self.journeys = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def _up(self, system: str) -> SimulatedSystem | None:
        found = self.systems.get(system)
        return found if found is not None and found.up else None

    async def run(self) -> None:
        """New customers at every site, in a Poisson stream, until cancelled."""
        rate = self.arrivals_per_hour * len(self.sites) / 3600 * self.pace.speed  # per real second
        try:
            while True:
                await asyncio.sleep(self.random.expovariate(rate))
                task = asyncio.create_task(self.journey(self.random.choice(self.sites)))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            for task in list(self._tasks):
                task.cancel()

    async def journey(self, site: str) -> None:
        self.journeys += 1
        r = self.random
        service = r.choice(list(self.pace.services))
        links: list[str] = []
        appointments = self._up("appointments")
        if isinstance(appointments, Appointments) and r.random() < 0.6:
            appointment = await self._booked_visit(appointments, site, service)
            if appointment is None:
                return  # cancelled or no-show: the journey ended before the branch
            links = [appointment]
        queue = self._up("queue")
        if isinstance(queue, Queue):
            ticket = await queue.arrive(site, service, links)
            crm = self._up("crm")
            if isinstance(crm, Crm) and r.random() < 0.05:  # flagged at the desk, e.g. a vulnerable customer
                await crm.flag(site, [ticket], reason_code="ASSISTANCE_NEEDED")

    async def _booked_visit(self, appointments: Appointments, site: str, service: str) -> str | None:
        """Book ahead, check eligibility, remind; the customer then comes, cancels or does not show."""
        r = self.random
        channel = r.choices(["web", "phone", "branch"], weights=[5, 3, 2])[0]
        links: list[str] = []
        contact_center = self._up("contact_center")
        if channel == "phone" and isinstance(contact_center, ContactCenter):
            links.append(await contact_center.log(site, channel="phone", reason_code="BOOKING",
                                                  outcome="BOOKED", links=[]))
        lead = r.uniform(10, 45) * 60
        slot = datetime.now(UTC) + timedelta(seconds=self.pace.real(lead))
        appointment = await appointments.book(site, service, channel, slot, links)
        eligible = True
        core = self._up("core")
        if isinstance(core, Core):
            eligible = r.random() >= 0.12
            await core.check(site, [appointment], passed=eligible)
        crm = self._up("crm")
        if isinstance(crm, Crm) and r.random() < 0.08:
            await crm.flag(site, [appointment], reason_code="VULNERABLE")
        await self.pace.sleep(lead * 0.5)
        if not appointments.up:
            return appointment
        await appointments.remind(appointment)
        if isinstance(contact_center, ContactCenter) and contact_center.up and r.random() < 0.15:
            await contact_center.log(site, channel="phone", reason_code="STATUS_QUERY", outcome="ANSWERED",
                                     links=[appointment])
        if r.random() < 0.05:
            slot += timedelta(seconds=self.pace.real(15 * 60))
            lead += 15 * 60
            await appointments.reschedule(appointment, slot)
        if not eligible and r.random() < 0.5:
            await appointments.cancel(appointment, "NOT_ELIGIBLE")
            return None
        if r.random() < 0.07:
            await self.pace.sleep(lead * 0.5 + 15 * 60)
            await appointments.no_show(appointment)
            return None
        await self.pace.sleep(lead * 0.5 + r.uniform(-5, 5) * 60)
        return appointment
