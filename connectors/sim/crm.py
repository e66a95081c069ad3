"""The CRM: the customer record, here only as a reference with a priority flag and journey summaries."""

from __future__ import annotations

from typing import Any

from connectors.sdk import OK, Outcome
from connectors.sim.system import Record, SimulatedSystem
from switchboard.commands import Command


class Crm(SimulatedSystem):
    system = "crm"
    prefix = "C"
    commands = SimulatedSystem.commands | frozenset({"journey.summary"})

    async def flag(self, site: str, links: list[str], *, reason_code: str) -> str:
        ref = self.new_ref()
        await self.change(ref, "customer.priority_changed", {"priority": "high", "reason_code": reason_code},
                          site=site, links=links, fields={"priority": "high", "summaries": 0})
        return ref

    async def execute(self, command: Command) -> Outcome:
        # the CRM files a summary on the customer's record when it has one, and as an activity otherwise
        record = self.own_record(command)
        if record is not None:
            record.fields["summaries"] = record.fields.get("summaries", 0) + 1
        return OK

    def drift_field(self, record: Record) -> tuple[str, Any] | None:
        return "priority", "normal" if record.fields["priority"] == "high" else "high"


def create_connector() -> SimulatedSystem:
    """For `switchboard connector check connectors.sim.crm`: this system alone in a fast branch network."""
    from connectors.sim import standalone  # noqa: PLC0415 - the network imports this module

    return standalone("crm")
