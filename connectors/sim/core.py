"""The core system: authoritative for eligibility, checked when an appointment is booked."""

from __future__ import annotations

from typing import Any

from connectors.sim.system import Record, SimulatedSystem


class Core(SimulatedSystem):
    system = "core"
    prefix = "E"

    async def check(self, site: str, links: list[str], *, passed: bool) -> str:
        ref = self.new_ref()
        result = "passed" if passed else "failed"
        await self.change(ref, "eligibility.checked",
                          {"result": result, **({} if passed else {"reason_code": "DOCS_MISSING"})},
                          site=site, links=links, fields={"eligibility": result})
        return ref

    def drift_field(self, record: Record) -> tuple[str, Any] | None:
        return "eligibility", "passed" if record.fields["eligibility"] == "failed" else "failed"


def create_connector() -> SimulatedSystem:
    """For `switchboard connector check connectors.sim.core`: this system alone in a fast branch network."""
    from connectors.sim import standalone  # noqa: PLC0415 - the network imports this module

    return standalone("core")
