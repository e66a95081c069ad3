"""Every fault of the simulated upstreams, switched while running, and what it does."""

from __future__ import annotations

import argparse
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import cast

import httpx
import msgspec
from nats.aio.client import Client as NATS

from backend.ingest.validate import validate
from connectors.sim.admin import AdminServer
from connectors.sim.appointments import Appointments
from connectors.sim.contact_center import ContactCenter
from connectors.sim.core import Core
from connectors.sim.crm import Crm
from connectors.sim.run import Simulation
from switchboard.commands import Command, command_result_id, command_subject
from switchboard.events import SEED_SYSTEMS
from switchboard.snapshots import (
    ERROR_CODE_HEADER,
    UNAVAILABLE,
    SnapshotRequest,
    decode_page,
    snapshot_subject,
)
from tests.support.connectors import own_jetstream, stream_events, stream_messages
from tests.support.waits import eventually
from tools.connector_cli import _faults_from_args, add_connector_commands


@contextlib.asynccontextmanager
async def simulation(tmp_path, systems: list[str]) -> AsyncIterator[tuple[Simulation, AdminServer, NATS]]:
    """Simulated systems with no branch traffic of their own (the test drives them), and their admin
    endpoint."""
    async with own_jetstream(tmp_path / "nats") as (server, nc):
        assert server.creds is not None  # own_jetstream's server has auth on
        sim = Simulation(systems=systems, sites=["faults"], speed=600, nats_url=server.url,
                         data_dir=tmp_path / "data", arrivals_per_hour=0.001, heartbeat_interval=0.3,
                         creds=dict.fromkeys(systems, server.creds))
        admin = AdminServer(sim, 0)
        async with sim:
            await sim.ready()
            await admin.start()
            try:
                yield sim, admin, nc
            finally:
                await admin.stop()


async def switch(admin: AdminServer, system: str, **faults: object) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{admin.port}") as client:
        response = await client.post(f"/faults/{system}", json=faults)
        assert response.status_code == 200, response.text
        for name, value in faults.items():
            assert response.json()[name] == value


async def command_result(nc, system: str, name: str, refs: list[str]) -> str:
    command = Command(id=uuid.uuid4().hex, system=system, command=name, journey_id=uuid.uuid4(), refs=refs,
                      site="faults", created_at=datetime.now(UTC))
    await nc.jetstream().publish(command_subject(command), msgspec.json.encode(command),
                                 headers={"Nats-Msg-Id": command.id})

    async def answered():
        results = await stream_events(nc, f"svc.events.{system}.command.result")
        return next((r.data.status for r in results if r.id == command_result_id(command)), None)

    return await eventually(answered)


async def latest_upstream(nc, system: str, after: float) -> str | None:
    beats = await stream_events(nc, f"svc.events.{system}.connector.heartbeat")
    fresh = [b for b in beats if b.time.timestamp() > after]
    return fresh[-1].data.upstream if fresh else None


async def test_outage_reports_down_answers_unavailable_and_recovers_when_switched_off(tmp_path):
    async with simulation(tmp_path, ["crm"]) as (sim, admin, nc):
        crm = cast(Crm, sim.systems["crm"])
        ref = await crm.flag("faults", [], reason_code="VULNERABLE")
        await switch(admin, "crm", outage=True)
        switched = time.time()
        assert await eventually(lambda: latest_upstream(nc, "crm", switched)) == "down"
        assert await command_result(nc, "crm", "journey.summary", [ref]) == "unavailable"
        reply = await nc.request(snapshot_subject("crm"), msgspec.json.encode(
            SnapshotRequest(site="faults", day=datetime.now(UTC).date())), timeout=5)
        assert reply.headers is not None and reply.headers[ERROR_CODE_HEADER] == UNAVAILABLE

        await switch(admin, "crm", outage=False)
        switched = time.time()
        assert await eventually(lambda: latest_upstream(nc, "crm", switched)) == "up"
        assert await command_result(nc, "crm", "journey.summary", [ref]) == "ok"
        assert crm.records[ref].fields["summaries"] == 1  # executed against the CRM's own record


async def test_malformed_events_reach_the_stream_and_fail_validation(tmp_path):
    async with simulation(tmp_path, ["core"]) as (sim, admin, nc):
        await switch(admin, "core", malformed=1.0)
        for _ in range(3):
            await cast(Core, sim.systems["core"]).check("faults", [], passed=True)
        subject = "svc.events.core.eligibility.checked"
        bodies = await eventually(lambda: _at_least(stream_messages(nc, subject), 3))
        verdicts = [validate(body, max_bytes=65536, known_systems=SEED_SYSTEMS, subject_system="core",
                             subject_type="eligibility.checked") for body, _ in bodies]
        assert [getattr(v, "kind", "accepted") for v in verdicts] == ["invalid_event"] * 3


async def test_duplicates_are_sent_twice_and_stored_once(tmp_path):
    async with simulation(tmp_path, ["contact_center"]) as (sim, admin, nc):
        await switch(admin, "contact_center", duplicates=1.0)
        system = cast(ContactCenter, sim.systems["contact_center"])
        for _ in range(5):
            await system.log("faults", channel="phone", reason_code="BOOKING", outcome="BOOKED", links=[])
        publisher = sim.runtimes["contact_center"].publisher
        await eventually(lambda: _true(publisher.duplicates >= 5))
        events = await stream_events(nc, "svc.events.contact_center.interaction.logged")
        assert len(events) == 5 and len({e.id for e in events}) == 5  # JetStream dropped every second copy
        assert publisher.acked == 10


async def test_out_of_order_delivery_lets_later_events_overtake_earlier_ones(tmp_path):
    async with simulation(tmp_path, ["appointments"]) as (sim, admin, nc):
        await switch(admin, "appointments", out_of_order=1.0)
        appointments = cast(Appointments, sim.systems["appointments"])
        refs = []
        for _ in range(10):
            ref = await appointments.book("faults", "passport", "web", datetime.now(UTC), [])
            await appointments.cancel(ref, "CUSTOMER_REQUEST")
            refs.append(ref)
        events = await eventually(lambda: _at_least(
            stream_events(nc, "svc.events.appointments.appointment.*"), 20), timeout=20)
        times = [e.time for e in events]
        assert times != sorted(times)  # stream order is no longer event-time order
        assert Counter(e.subject for e in events) == dict.fromkeys(refs, 2)  # yet nothing was lost


async def test_silent_drift_changes_the_upstream_record_without_an_event(tmp_path):
    async with simulation(tmp_path, ["crm"]) as (sim, admin, nc):
        crm = cast(Crm, sim.systems["crm"])
        announced = await crm.flag("faults", [], reason_code="VULNERABLE")
        await switch(admin, "crm", drift=1.0)
        silent = await crm.flag("faults", [], reason_code="VULNERABLE")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{admin.port}") as client:
            drifted = (await client.post("/drift/crm")).json()["ref"]
        assert drifted in (announced, silent)

        reply = await nc.request(snapshot_subject("crm"), msgspec.json.encode(
            SnapshotRequest(site="faults", day=datetime.now(UTC).date())), timeout=5)
        snapshot = {r.ref: r.fields["priority"] for r in decode_page(reply.data).records}
        # one more change, announced: once its event is in the stream, any the silent one had sent is too
        await switch(admin, "crm", drift=0.0)
        sentinel = await crm.flag("faults", [], reason_code="VULNERABLE")

        async def told_up_to_the_sentinel() -> dict[str, str] | None:
            told = {e.subject: e.data.priority for e in await stream_events(nc, "svc.events.crm.>")
                    if e.type == "customer.priority_changed"}
            return told if sentinel in told else None

        told = await eventually(told_up_to_the_sentinel)
        assert set(snapshot) == {announced, silent} and set(told) == {announced, sentinel}
        assert snapshot[drifted] != told.get(drifted, "high")  # the hand edit is in the system, not in events
        assert crm.silent_changes == 2


async def test_a_slow_upstream_delays_answers_and_reports_degraded(tmp_path):
    async with simulation(tmp_path, ["appointments"]) as (sim, admin, nc):
        ref = await cast(Appointments, sim.systems["appointments"]).book("faults", "tax", "branch",
                                                                         datetime.now(UTC), [])
        await switch(admin, "appointments", slow=0.6)
        switched = time.time()
        started = time.monotonic()
        reply = await nc.request(snapshot_subject("appointments"), msgspec.json.encode(
            SnapshotRequest(site="faults", day=datetime.now(UTC).date())), timeout=5)
        assert time.monotonic() - started >= 0.6
        assert [r.ref for r in decode_page(reply.data).records] == [ref]
        started = time.monotonic()
        assert await command_result(nc, "appointments", "visit.hold", [ref]) == "ok"
        assert time.monotonic() - started >= 0.6
        assert await eventually(lambda: latest_upstream(nc, "appointments", switched)) == "degraded"


def test_fault_flags_from_the_command_line_are_in_force_at_start():
    parser = argparse.ArgumentParser()
    add_connector_commands(parser.add_subparsers())
    args = parser.parse_args(["connector", "sim", "--outage", "queue", "--malformed", "crm=0.25",
                              "--slow", "core=2", "--out-of-order", "queue=0.5"])
    faults = _faults_from_args(args)
    assert faults["queue"].outage and faults["queue"].out_of_order == 0.5
    assert faults["crm"].malformed == 0.25 and faults["core"].slow == 2.0


async def _at_least(pending, n: int):
    found = await pending
    return found if len(found) >= n else None


async def _true(value: bool) -> bool:
    return value

