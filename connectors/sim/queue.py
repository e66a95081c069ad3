"""The queue system: tickets, counters and service at each site (the worked example in docs/connectors.md).

It owns the floor: who is waiting, which counters are open, who is being served where. Every
change of a ticket is one canonical event; the floor's load is a `capacity.changed` per site.
It executes the commands of the routing rules (`ticket.prioritize`, `visit.context`, `staff.alert`) and
the floor's (`ticket.call`, `ticket.recall`, `ticket.no_show`, `ticket.transfer`, `service.start`,
`service.complete`), each of those answered by the canonical event of what it did.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from connectors.sdk import OK, Outcome
from connectors.sim.faults import Faults
from connectors.sim.pace import Pace
from connectors.sim.system import Record, SimulatedSystem
from switchboard.commands import FLOOR_COMMANDS, Command
from switchboard.waits import wait_set


@dataclass
class Floor:
    counters_open: int
    waiting: deque[str] = field(default_factory=deque)  # ticket refs, in calling order
    busy: dict[str, str] = field(default_factory=dict)  # counter → ticket ref
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    reported: tuple[int, int, int, int] | None = None  # the last capacity sent

    def free_counter(self) -> str | None:
        return next((f"C{n}" for n in range(1, self.counters_open + 1) if f"C{n}" not in self.busy), None)


# the stages of a ticket each floor command acts on
_FLOOR_STAGES = {"ticket.call": ("arrived", "waiting"), "ticket.recall": ("called",),
                 "ticket.no_show": ("arrived", "waiting", "called"),
                 "ticket.transfer": ("arrived", "waiting"),
                 "service.start": ("called",), "service.complete": ("in_service",)}


class Queue(SimulatedSystem):
    system = "queue"
    prefix = "T"
    commands = SimulatedSystem.commands | frozenset({"ticket.prioritize", "visit.context", "staff.alert",
                                                     *FLOOR_COMMANDS.values()})

    def __init__(self, *, sites: list[str], pace: Pace, counters: tuple[int, int] = (3, 6),
                 faults: Faults | None = None, seed: int | None = None) -> None:
        super().__init__(faults=faults, seed=seed)
        self.pace = pace
        self.counters = counters
        self.floors = {site: Floor(counters_open=counters[1]) for site in sites}
        self.visit_context: dict[str, dict[str, Any]] = {}  # appointment ref → why the customer comes

    # --- what happens on the floor --------------------------------------------------------------

    async def arrive(self, site: str, service: str, links: list[str]) -> str:
        ref = self.new_ref()
        ticket = ref.split(":", 1)[1]
        await self.change(ref, "customer.arrived", {}, site=site, stage="arrived", links=links,
                          fields={"service": service})
        await self.change(ref, "ticket.issued", {"ticket": ticket, "queue_name": service}, site=site,
                          stage="waiting", fields={"ticket": ticket})
        floor = self.floors[site]
        floor.waiting.append(ref)
        floor.wake.set()
        return ref

    async def _run_floor(self, site: str) -> None:
        floor = self.floors[site]
        while True:
            await wait_set(floor.wake, 1.0)
            floor.wake.clear()
            while self.up and floor.waiting and (counter := floor.free_counter()):
                ref = floor.waiting.popleft()
                floor.busy[counter] = ref
                self.spawn(self._serve(site, counter, ref))
            await self._report_capacity(site)

    async def _serve(self, site: str, counter: str, ref: str) -> None:
        floor = self.floors[site]
        try:
            await self.change(ref, "ticket.called", {"counter": counter}, site=site, stage="called",
                              fields={"counter": counter})
            await self.pace.sleep(self.random.uniform(30, 90))  # walking to the counter
            await self.change(ref, "service.started", {"counter": counter}, site=site, stage="in_service")
            await self.pace.sleep(self.pace.service_seconds(self.records[ref].fields["service"]))
            await self.change(ref, "service.completed", {"outcome": "RESOLVED"}, site=site, stage="completed")
        finally:
            if floor.busy.get(counter) == ref:  # staff may have freed it (a no-show) meanwhile
                del floor.busy[counter]
            floor.wake.set()

    async def _run_staffing(self) -> None:
        """Counters open and close through the day (breaks, shifts)."""
        low, high = self.counters
        while True:
            await self.pace.sleep(self.random.uniform(20, 40) * 60)
            if self.up:
                floor = self.floors[self.random.choice(list(self.floors))]
                floor.counters_open = self.random.randint(low, high)
                floor.wake.set()

    async def _report_capacity(self, site: str) -> None:
        floor = self.floors[site]
        now = (floor.counters_open, len(floor.busy), floor.counters_open + 1, len(floor.waiting))
        if now == floor.reported or not self.up:
            return
        floor.reported = now
        await self.send(self.event("capacity.changed", f"site:{site}", {
            "site": site, "counters_open": now[0], "counters_busy": now[1], "staff_on_duty": now[2],
            "queue_length": now[3]}))

    async def start(self) -> None:
        await super().start()
        for site in self.floors:
            self.spawn(self._run_floor(site))
        self.spawn(self._run_staffing())

    # --- commands -------------------------------------------------------------------------------

    async def execute(self, command: Command) -> Outcome:
        record = self.own_record(command)
        match command.command:
            case "ticket.prioritize":
                if record is None or record.stage != "waiting":
                    return Outcome("failed", "ticket is not waiting")
                record.fields["priority"] = "high"
                waiting = self.floors[record.site].waiting
                if record.ref in waiting:  # called meanwhile: nothing left to reorder
                    waiting.remove(record.ref)
                    waiting.appendleft(record.ref)
            case "visit.context":
                for ref in command.refs:
                    self.visit_context[ref] = dict(command.data)
            case "staff.alert":
                if record is not None:
                    record.fields["alerts"] = record.fields.get("alerts", 0) + 1
            case name if name in _FLOOR_STAGES:
                if record is None or record.stage not in _FLOOR_STAGES[name]:
                    return Outcome("failed", f"{name} needs a ticket {' or '.join(_FLOOR_STAGES[name])}")
                return await self._floor_command(record, name, command.data)
        return OK

    async def _floor_command(self, record: Record, name: str, data: dict[str, Any]) -> Outcome:
        """Staff at the floor act on one ticket; the event says what happened."""
        floor, ref, site = self.floors[record.site], record.ref, record.site
        counter = data.get("counter") or record.fields.get("counter")
        if name in ("ticket.call", "ticket.recall", "service.start") and not isinstance(counter, str):
            return Outcome("failed", f"{name} needs a counter")
        if name in ("ticket.no_show", "service.complete", "ticket.call"):
            self._leave(floor, ref)
        match name:
            case "ticket.call":
                floor.busy[str(counter)] = ref
                await self.change(ref, "ticket.called", {"counter": counter}, site=site, stage="called",
                                  fields={"counter": counter})
            case "ticket.recall":
                await self.change(ref, "ticket.called", {"counter": counter}, site=site, stage="called",
                                  fields={"counter": counter})
            case "ticket.no_show":
                await self.change(ref, "appointment.no_show", {}, site=site, stage="no_show")
            case "ticket.transfer":
                queue_name = data.get("queue_name")
                if not isinstance(queue_name, str):
                    return Outcome("failed", "ticket.transfer needs a queue_name")
                await self.change(ref, "ticket.issued", {"ticket": record.fields["ticket"],
                                                         "queue_name": queue_name},
                                  site=site, fields={"queue_name": queue_name})
            case "service.start":
                await self.change(ref, "service.started", {"counter": counter}, site=site, stage="in_service",
                                  fields={"counter": counter})
            case "service.complete":
                outcome = data.get("outcome") if isinstance(data.get("outcome"), str) else "SERVED"
                await self.change(ref, "service.completed", {"outcome": outcome}, site=site,
                                  stage="completed")
        floor.wake.set()
        return OK

    @staticmethod
    def _leave(floor: Floor, ref: str) -> None:
        """The ticket is no longer waiting, nor at a counter."""
        if ref in floor.waiting:
            floor.waiting.remove(ref)
        for counter in [c for c, r in floor.busy.items() if r == ref]:
            del floor.busy[counter]

    def drift_field(self, record: Record) -> tuple[str, Any] | None:
        counter = record.fields.get("counter")
        return ("counter", f"C{int(counter[1:]) % 9 + 1}") if counter else None


def create_connector() -> SimulatedSystem:
    """For `switchboard connector check connectors.sim.queue`: this system alone in a fast branch network."""
    from connectors.sim import standalone  # noqa: PLC0415 - the network imports this module

    return standalone("queue")
