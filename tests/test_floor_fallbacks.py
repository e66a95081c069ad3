"""A fallback for each system (CONTRACT section 10): its own manual steps only, and its replay, end to end
against the simulated system as a real connector, pushing that system its own records and flagging as
conflicts the records it changed meanwhile."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, time, timedelta
from typing import Any

import httpx
import pytest

from connectors.sim.appointments import Appointments
from connectors.sim.core import Core
from connectors.sim.crm import Crm
from connectors.sim.system import SimulatedSystem
from tests.support.backends import Stack, own_stack
from tests.support.failures import bearer
from tests.support.fallbacks import act, start
from tests.support.floor import letters
from tests.support.simulators import journey_of, running
from tests.support.waits import eventually

RECONCILING = {"SWITCHBOARD_RECONCILE_INTERVAL_S": "0", "SWITCHBOARD_RECONCILE_TICK_S": "0.3"}


@pytest.fixture(scope="module")
async def stack(server_urls: dict[str, str],
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """A backend of this module's own: the systems' commands, pace and heartbeats are its tests' alone."""
    async with own_stack(server_urls["database_url"], tmp_path_factory.mktemp("floor-fallbacks"),
                         RECONCILING) as stack:
        yield stack


@pytest.fixture
async def fapi(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.backend.url, timeout=15) as client:
        yield client


async def step(api: httpx.AsyncClient, headers: dict[str, str], fallback_id: int,
               **body: Any) -> dict[str, Any]:
    response = await act(api, headers, fallback_id, step_id=uuid.uuid4().hex, **body)
    assert response.status_code == 201, response.text
    return response.json()


@contextlib.asynccontextmanager
async def outage(api: httpx.AsyncClient, headers: dict[str, str],
                 system: SimulatedSystem) -> AsyncIterator[None]:
    """The system is down for the block, and reported up again before it ends (a replay needs it)."""
    async def status_is(wanted: str) -> bool:
        items = (await api.get("/api/v1/integrations", headers=headers)).json()["items"]
        return any(i["system"] == system.system and i["status"] == wanted for i in items)

    system.faults.outage = True
    await eventually(lambda: status_is("down"))
    yield
    system.faults.outage = False
    await eventually(lambda: status_is("up"))


async def replayed(api: httpx.AsyncClient, headers: dict[str, str], fallback_id: int,
                   reason: str) -> dict[str, Any]:
    assert (await api.post(f"/api/v1/fallbacks/{fallback_id}/end", json={"reason": reason},
                           headers=headers)).status_code == 200

    async def ended():
        found = (await api.get(f"/api/v1/fallbacks/{fallback_id}", headers=headers)).json()
        return found if found["status"] == "ended" else None

    return await eventually(ended)


async def open_conflicts(api: httpx.AsyncClient, headers: dict[str, str], site: str) -> dict[str, str]:
    items = (await api.get("/api/v1/reconciliation/drift", params={"site": site, "status": "open"},
                           headers=headers)).json()["items"]
    return {i["ref"]: i["field"] for i in items if i["conflict"]}


def changed_meanwhile(system: SimulatedSystem, ref: str, **fields: Any) -> None:
    """The system's own staff change a record while Switchboard stands in for it."""
    record = system.records[ref]
    if "stage" in fields:
        record.stage = fields.pop("stage")
    record.fields.update(fields)
    record.updated_at = datetime.now(UTC)


async def known(api: httpx.AsyncClient, headers: dict[str, str], ref: str,
                check: Callable[[dict[str, Any]], bool] = lambda j: True) -> dict[str, Any]:
    async def found():
        journey = await journey_of(api, headers, ref)
        return journey if journey and check(journey) else None

    return await eventually(found)


async def in_system(check: Callable[[], bool]) -> None:
    """Wait until the simulated system's own records pass `check`."""
    async def look() -> bool:
        return check()

    await eventually(look)


async def test_a_crm_fallback_sets_priority_by_hand_and_its_replay_pushes_the_crm_its_records(
        fapi, stack, token, tmp_path):
    site = f"crm-{letters()}"
    floor, sre = bearer(token, "floor_staff", [site]), bearer(token, "sre", [site])
    crm = Crm()
    async with running(stack.settings, tmp_path, crm):
        settled, disputed = [await crm.flag(site, [], reason_code="VIP") for _ in range(2)]
        for ref in (settled, disputed):
            await known(fapi, sre, ref, lambda j: j["priority"] == "high")
        async with outage(fapi, sre, crm):
            fallback = (await start(fapi, floor, site, system="crm", reason="crm unreachable")).json()
            assert fallback["steps"] == ["set_priority"]
            refused = await act(fapi, floor, fallback["id"], action="call", ref=settled, counter="C1")
            assert refused.status_code == 400 and "set_priority" in refused.json()["title"]
            for ref in (settled, disputed):
                done = await step(fapi, floor, fallback["id"], action="set_priority", ref=ref,
                                  priority="normal", reason_code="CLEARED")
                assert (done["status"], done["ref"], done["stage"]) == ("applied", ref, "open")
            assert (await known(fapi, sre, settled))["priority"] == "normal"
            changed_meanwhile(crm, disputed, priority="high")
        ended = await replayed(fapi, floor, fallback["id"], "crm is back")
        await in_system(lambda: crm.records[settled].fields["priority"] == "normal")  # pushed its own record
    assert (ended["replay"]["pushed"], ended["replay"]["conflicts"]) == (1, [disputed])
    assert {e["ref"]: e["replay_status"] for e in ended["ledger"]} == {settled: "pushed",
                                                                       disputed: "conflict"}
    assert crm.records[disputed].fields["priority"] == "high", "what the crm changed meanwhile stays"
    assert (await open_conflicts(fapi, sre, site)) == {disputed: "priority"}


async def test_a_core_fallback_marks_eligibility_unverified_verifies_later_and_replays_its_records_to_core(
        fapi, stack, token, tmp_path):
    site = f"core-{letters()}"
    floor, sre = bearer(token, "floor_staff", [site]), bearer(token, "sre", [site])
    core = Core()
    async with running(stack.settings, tmp_path, core):
        verified, disputed = [await core.check(site, [], passed=False) for _ in range(2)]
        for ref in (verified, disputed):
            await known(fapi, sre, ref, lambda j: j["eligibility"] == "failed")
        async with outage(fapi, sre, core):
            fallback = (await start(fapi, floor, site, system="core", reason="core unreachable")).json()
            assert fallback["steps"] == ["mark_unverified", "verify"]
            for ref in (verified, disputed):
                await step(fapi, floor, fallback["id"], action="mark_unverified", ref=ref)
            assert (await known(fapi, sre, disputed))["eligibility"] == "unverified"
            await step(fapi, floor, fallback["id"], action="verify", ref=verified, result="passed",
                       reason_code="DOCS_SEEN")
            assert (await known(fapi, sre, verified))["eligibility"] == "passed"
            no_result = await act(fapi, floor, fallback["id"], action="verify", ref=verified)
            assert no_result.status_code == 400 and "result" in no_result.json()["title"]
            changed_meanwhile(core, disputed, eligibility="passed")
        ended = await replayed(fapi, floor, fallback["id"], "core is back")
        await in_system(lambda: core.records[verified].fields["eligibility"] == "passed")
    assert (ended["replay"]["pushed"], ended["replay"]["conflicts"]) == (1, [disputed])
    assert [e["replay_status"] for e in ended["ledger"] if e["ref"] == verified] == ["pushed", "pushed"]
    assert core.records[disputed].fields["eligibility"] == "passed"
    assert (await open_conflicts(fapi, sre, site)) == {disputed: "eligibility"}


async def bookings_today(api: httpx.AsyncClient, headers: dict[str, str], site: str) -> set[str]:
    """The references `GET /api/v1/sites/<site>/bookings` offers for check-in, once the list has them."""
    response = await api.get(f"/api/v1/sites/{site}/bookings", headers=headers)
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["day"] == datetime.now(UTC).date().isoformat()
    return {item["ref"] for item in page["items"]}


async def test_an_appointments_fallback_checks_in_by_reference_books_walk_ins_and_replays_the_bookings(
        fapi, stack, token, tmp_path):
    site = f"apt-{letters()}"
    floor, sre = bearer(token, "floor_staff", [site]), bearer(token, "sre", [site])
    appointments = Appointments()
    # noon UTC today: today at the site (UTC, as the site is in no sites file) whatever the hour of the run
    slot = datetime.combine(datetime.now(UTC).date(), time(12), UTC)
    async with running(stack.settings, tmp_path, appointments):
        kept, cancelled, tomorrow = [await appointments.book(site, "passport", "web", at, [])
                                     for at in (slot, slot, slot + timedelta(days=1))]
        for ref in (kept, cancelled, tomorrow):
            await known(fapi, sre, ref, lambda j: j["stage"] == "booked")
        async with outage(fapi, sre, appointments):
            fallback = (await start(fapi, floor, site, system="appointments", reason="bookings down")).json()
            assert fallback["steps"] == ["check_in", "book_walk_in"]
            assert await bookings_today(fapi, floor, site) == {kept, cancelled}
            walk_in = await step(fapi, floor, fallback["id"], action="book_walk_in", service="tax")
            assert walk_in["ref"].startswith("appointments:W-") and walk_in["stage"] == "booked"
            assert await bookings_today(fapi, floor, site) == {kept, cancelled, walk_in["ref"]}
            for ref in (kept, cancelled):
                arrived = await step(fapi, floor, fallback["id"], action="check_in", ref=ref)
                assert arrived["stage"] == "arrived"
            assert await bookings_today(fapi, floor, site) == {walk_in["ref"]}
            again = await act(fapi, floor, fallback["id"], action="check_in", ref=kept)
            assert again.status_code == 409 and "not an open booking" in again.json()["title"]
            not_today = await act(fapi, floor, fallback["id"], action="check_in", ref=tomorrow)
            assert not_today.status_code == 409 and "not booked for today" in not_today.json()["title"]
            unknown = await act(fapi, floor, fallback["id"], action="check_in", ref="appointments:A-NOSUCH")
            assert unknown.status_code == 404
            no_ref = await act(fapi, floor, fallback["id"], action="check_in")
            assert no_ref.status_code == 400
            foreign = await fapi.get(f"/api/v1/sites/{site}x/bookings", headers=floor)
            assert foreign.status_code == 403
            changed_meanwhile(appointments, cancelled, stage="cancelled")
        ended = await replayed(fapi, floor, fallback["id"], "bookings are back")

        def booked() -> bool:
            record = appointments.records.get(walk_in["ref"])
            return record is not None and record.stage == "booked" and record.fields.get("service") == "tax"

        await in_system(booked)
    assert (ended["replay"]["pushed"], ended["replay"]["in_system"], ended["replay"]["conflicts"]) == (
        1, 1, [cancelled])
    assert {e["ref"]: e["replay_status"] for e in ended["ledger"]} == {
        walk_in["ref"]: "pushed", kept: "in_system", cancelled: "conflict"}
    assert appointments.records[cancelled].stage == "cancelled"
    assert (await open_conflicts(fapi, sre, site)) == {cancelled: "stage"}
