"""The contact centre: phone bookings and calls about visits, logged as interactions."""

from __future__ import annotations

from typing import Any

from connectors.sim.system import Record, SimulatedSystem


class ContactCenter(SimulatedSystem):
    system = "contact_center"
    prefix = "I"

    async def log(self, site: str, *, channel: str, reason_code: str, outcome: str, links: list[str]) -> str:
        ref = self.new_ref()
        await self.change(ref, "interaction.logged", {"channel": channel, "reason_code": reason_code,
                                                      "outcome": outcome},
                          site=site, links=links,
                          fields={"last_interaction": reason_code, "outcome": outcome})
        return ref

    def drift_field(self, record: Record) -> tuple[str, Any] | None:
        return "outcome", "CALLBACK" if record.fields["outcome"] != "CALLBACK" else "RESOLVED"


def create_connector() -> SimulatedSystem:
    """For `switchboard connector check connectors.sim.contact_center`: this system alone in a fast branch
    network."""
    from connectors.sim import standalone  # noqa: PLC0415 - the network imports this module

    return standalone("contact_center")
