"""A small feed of believable branch traffic for the demo: journeys booked, arriving, queued and served.

It publishes canonical events the way connectors do (JetStream, `Nats-Msg-Id` = `<source> <id>`),
each from the system that owns that step, with links that join their references into one journey.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from nats.js import JetStreamContext

from switchboard.events import nats_msg_id

SERVICES = ("passport", "benefits", "licence", "tax")
SYSTEMS = ("appointments", "queue", "crm", "core", "contact_center")
COUNTERS_PER_SITE = 6


class Feed:
    def __init__(self, js: JetStreamContext, sites: list[str], rate: float, seed: int | None = None) -> None:
        self.js = js
        self.sites = sites
        self.rate = rate
        self.random = random.Random(seed)
        self.counter = 0
        self.waiting = dict.fromkeys(sites, 0)
        self.busy = dict.fromkeys(sites, 0)
        self.counters = {site: asyncio.Semaphore(COUNTERS_PER_SITE) for site in sites}
        self.published = 0

    async def publish(self, system: str, type_: str, subject: str, data: dict[str, Any],
                      at: datetime | None = None) -> None:
        event = {
            "specversion": "1.0", "id": uuid.uuid4().hex, "source": f"/{system}", "type": type_,
            "subject": subject, "time": (at or datetime.now(UTC)).isoformat(), "datacontenttype": "application/json",
            "data": data,
        }
        await self.js.publish(f"svc.events.{system}.{type_}", msgspec.json.encode(event),
                              headers={"Nats-Msg-Id": nats_msg_id(event["source"], event["id"])})
        self.published += 1

    async def journey(self) -> None:
        r = self.random
        self.counter += 1
        site = r.choice(self.sites)
        n = self.counter
        queue_ref = f"queue:T-{n:05d}"
        links: list[str] = []
        if r.random() < 0.6:  # booked ahead; the rest walk in
            appt = f"appointments:A-{n:05d}"
            links = [appt]
            channel = r.choice(("web", "phone", "branch"))
            await self.publish("appointments", "appointment.booked", appt, {
                "site": site, "service": r.choice(SERVICES), "channel": channel,
                "slot_start": (datetime.now(UTC) + timedelta(minutes=r.randint(1, 30))).isoformat()})
            failed = r.random() < 0.1
            await self.publish("core", "eligibility.checked", f"core:C-{n:05d}", {
                "site": site, "links": [appt], "result": "failed" if failed else "passed",
                **({"reason_code": "DOCS_MISSING"} if failed else {})})
            if r.random() < 0.1:
                await self.publish("crm", "customer.priority_changed", f"crm:P-{n:05d}",
                                   {"site": site, "links": [appt], "priority": "high", "reason_code": "VULNERABLE"})
            await asyncio.sleep(r.uniform(1, 6))
            if failed and r.random() < 0.5:
                await self.publish("appointments", "appointment.cancelled", appt,
                                   {"site": site, "reason_code": "NOT_ELIGIBLE"})
                return
            if r.random() < 0.08:
                await self.publish("appointments", "appointment.no_show", appt, {"site": site})
                return
        await self.publish("queue", "customer.arrived", queue_ref, {"site": site, "links": links})
        await self.publish("queue", "ticket.issued", queue_ref,
                           {"site": site, "ticket": f"T-{n:05d}", "queue_name": "main"})
        self.waiting[site] += 1
        async with self.counters[site]:  # called only when a counter is free
            counter = f"C{r.randint(1, COUNTERS_PER_SITE)}"
            self.waiting[site] -= 1
            self.busy[site] += 1
            await self.publish("queue", "ticket.called", queue_ref, {"site": site, "counter": counter})
            await asyncio.sleep(r.uniform(0.5, 2))
            await self.publish("queue", "service.started", queue_ref, {"site": site, "counter": counter})
            await asyncio.sleep(r.uniform(3, 15))
            await self.publish("queue", "service.completed", queue_ref, {"site": site, "outcome": "RESOLVED"})
            self.busy[site] -= 1

    async def capacity_and_heartbeats(self) -> None:
        while True:
            for site in self.sites:
                await self.publish("queue", "capacity.changed", f"site:{site}", {
                    "site": site, "counters_open": COUNTERS_PER_SITE, "counters_busy": self.busy[site],
                    "staff_on_duty": 7, "queue_length": self.waiting[site]})
            for system in SYSTEMS:
                await self.publish(system, "connector.heartbeat", f"connector:{system}-demo",
                                   {"upstream": "up", "version": "demo-1"})
            await asyncio.sleep(5)

    async def run(self) -> None:
        tasks: set[asyncio.Task[None]] = set()
        ticker = asyncio.create_task(self.capacity_and_heartbeats())
        try:
            while True:
                task = asyncio.create_task(self.journey())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                await asyncio.sleep(self.random.expovariate(self.rate))
        finally:
            ticker.cancel()
            for task in tasks:
                task.cancel()
