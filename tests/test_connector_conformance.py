"""The conformance kit passes the five simulated connectors, and fails a connector that breaks the
contract."""

from __future__ import annotations

import asyncio
import sys
import types

from backend.settings import BackendSettings
from connectors.sdk import OK, Connector, Outcome
from switchboard.commands import Command
from tools.conformance import Check, run_checks

SIMULATED = ["crm", "appointments", "queue", "contact_center", "core"]


async def test_the_five_simulated_connectors_pass_the_kit(settings: BackendSettings):
    reports = await asyncio.gather(*(
        run_checks(f"connectors.sim.{name}", nats_url=settings.bus.nats_url, creds=settings.bus.nats_creds,
                   watch_seconds=45)
        for name in SIMULATED))
    for name, checks in zip(SIMULATED, reports, strict=True):
        assert [c.name for c in checks] == ["events", "heartbeats", "snapshots", "commands"]
        assert all(c.passed for c in checks), (name, [(c.name, c.detail) for c in checks if not c.passed])


async def kit_checks(connector: type[Connector], settings: BackendSettings) -> dict[str, Check]:
    """The kit's checks of `connector`, run as a module the kit imports, by name."""
    module = types.ModuleType(f"conformance_{connector.__name__.lower()}")
    module.create_connector = connector  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        return {c.name: c for c in await run_checks(module.__name__, nats_url=settings.bus.nats_url,
                                                    creds=settings.bus.nats_creds, watch_seconds=1.5)}
    finally:
        del sys.modules[module.__name__]


class Silent(Connector):
    """Publishes nothing, keeps no snapshot and answers every command `failed`."""

    system = "crm"
    commands = frozenset({"journey.summary"})


async def test_a_connector_without_events_or_snapshots_fails_the_kit(settings: BackendSettings):
    checks = await kit_checks(Silent, settings)
    assert not checks["events"].passed and "no events" in checks["events"].detail
    assert checks["heartbeats"].passed  # the SDK sends them whatever the connector does
    assert not checks["snapshots"].passed
    assert checks["commands"].passed  # answered, even if only `failed`


class ClaimsFloorWork(Connector):
    """Says `ok` to the floor's `ticket.call` without publishing the ticket's `ticket.called`."""

    system = "queue"
    commands = frozenset({"ticket.call"})

    async def handle(self, command: Command) -> Outcome:
        return OK


async def test_a_floor_command_answered_ok_without_its_event_fails_the_kit(settings: BackendSettings):
    checks = await kit_checks(ClaimsFloorWork, settings)
    assert not checks["commands"].passed
    assert "without the event of what they did: ['ticket.call']" in checks["commands"].detail
