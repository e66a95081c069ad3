"""The appointment tool: bookings ahead (web, phone, branch), reminders, reschedules, cancellations,
no-shows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from connectors.sdk import OK, Outcome
from connectors.sim.system import Record, SimulatedSystem
from switchboard.commands import Command


class Appointments(SimulatedSystem):
    system = "appointments"
    prefix = "A"
    commands = SimulatedSystem.commands | frozenset({"visit.hold"})

    async def book(self, site: str, service: str, channel: str, slot_start: datetime,
                   links: list[str]) -> str:
        ref = self.new_ref()
        await self.change(ref, "appointment.booked", {"service": service, "slot_start": slot_start,
                                                      "channel": channel},
                          site=site, stage="booked", links=links,
                          fields={"service": service, "slot_start": slot_start.isoformat(), "held": False})
        return ref

    async def remind(self, ref: str) -> None:
        record = self.records[ref]
        if not record.fields.get("held"):  # a held visit gets no reminder: that is what the hold is for
            await self.change(ref, "reminder.sent", {"channel": "web"}, site=record.site)

    async def reschedule(self, ref: str, slot_start: datetime) -> None:
        await self.change(ref, "appointment.rescheduled", {"slot_start": slot_start},
                          site=self.records[ref].site, fields={"slot_start": slot_start.isoformat()})

    async def cancel(self, ref: str, reason_code: str) -> None:
        await self.change(ref, "appointment.cancelled", {"reason_code": reason_code},
                          site=self.records[ref].site, stage="cancelled")

    async def no_show(self, ref: str) -> None:
        await self.change(ref, "appointment.no_show", {}, site=self.records[ref].site, stage="no_show")

    async def execute(self, command: Command) -> Outcome:
        record = self.own_record(command)
        if record is None:
            return Outcome("failed", "no such appointment")
        record.fields["held"] = True
        return OK

    def drift_field(self, record: Record) -> tuple[str, Any] | None:
        return ("held", not record.fields.get("held")) if record.stage == "booked" else None


def create_connector() -> SimulatedSystem:
    """For `switchboard connector check connectors.sim.appointments`: this system alone in a fast branch
    network."""
    from connectors.sim import standalone  # noqa: PLC0415 - the network imports this module

    return standalone("appointments")
