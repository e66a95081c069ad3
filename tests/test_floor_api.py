"""Floor operations (CONTRACT section 10): sites, the floor in serving order, and actions on a customer,
sent to the simulated queue as commands or, during the queue's fallback, recorded as manual steps."""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import pytest

from tests.support.backends import Stack, own_stack
from tests.support.database import refusing_site
from tests.support.events import cloud_event, publish
from tests.support.failures import bearer
from tests.support.fallbacks import start
from tests.support.floor import act, customer, floor_of, letters, sites_file
from tests.support.simulators import journey_of, running, still_queue, waiting
from tests.support.waits import Check, eventually

ORDER_SITE, ACT_SITE = f"order-{letters()}", f"act-{letters()}"


@pytest.fixture(scope="module")
async def stack(server_urls: dict[str, str],
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    """A backend of this module's own with a sites file; a manual step's answer waits for nothing
    (`floor_apply_wait_s` 0), so that every step answers while its event is still on its way."""
    folder = tmp_path_factory.mktemp("floor")
    path = sites_file(folder, {
        ORDER_SITE: {"time_zone": "Europe/London", "wait_target_s": 900, "counters": ["C1", "C2", "C3"],
                     "service_targets_s": {"passport": 1200}},
        ACT_SITE: {"counters": ["C1", "C2"]}})
    env = {"SWITCHBOARD_SITES_FILE": str(path), "SWITCHBOARD_FLOOR_APPLY_WAIT_S": "0"}
    async with own_stack(server_urls["database_url"], folder, env) as stack:
        yield stack


@pytest.fixture
async def fapi(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.backend.url, timeout=15) as client:
        yield client


async def test_sites_lists_the_callers_sites_with_their_settings(fapi, stack, token):
    elsewhere = f"loose-{letters()}"
    await publish(stack.js, cloud_event("customer.arrived", f"queue:T-{letters()}", {"site": elsewhere}))
    one = (await fapi.get("/api/v1/sites", headers=bearer(token, "floor_staff", [ORDER_SITE]))).json()
    assert one == {"items": [{"site": ORDER_SITE, "time_zone": "Europe/London", "wait_target_s": 900.0,
                              "service_targets_s": {"passport": 1200.0}, "counters": ["C1", "C2", "C3"]}]}

    async def every_site():
        items = (await fapi.get("/api/v1/sites", headers=bearer(token, "manager"))).json()["items"]
        return {i["site"]: i for i in items} if elsewhere in {i["site"] for i in items} else None

    every = await eventually(every_site)
    assert {ORDER_SITE, ACT_SITE} <= set(every), "configured sites are listed before any journey reaches them"
    assert every[elsewhere] == {"site": elsewhere, "time_zone": "Europe/Amsterdam", "wait_target_s": 600.0,
                                "service_targets_s": {}, "counters": []}
    connector = {"Authorization": f"Bearer {token('connector', system='queue')}"}
    assert (await fapi.get("/api/v1/sites", headers=connector)).status_code == 403
    assert (await fapi.get("/api/v1/sites")).status_code == 401


async def test_the_floor_lists_customers_at_the_counters_then_by_priority_appointment_and_arrival(
        fapi, stack, token):
    site, t0 = ORDER_SITE, datetime.now(UTC) - timedelta(minutes=30)
    tag = letters()

    def ticket(n: int) -> str:
        return f"queue:T-{tag}-{n}"

    async def arrive(n: int, minute: int, **extra: Any) -> None:
        at = t0 + timedelta(minutes=minute)
        await publish(stack.js, cloud_event("customer.arrived", ticket(n), {"site": site}, time=at))
        await publish(stack.js, cloud_event("ticket.issued", ticket(n), {"site": site, "ticket": f"T{n}",
                                                                        "queue_name": "tax"}, time=at))

    for n, minute in ((1, 1), (2, 2), (3, 3), (4, 4), (5, 0), (6, 0)):
        await arrive(n, minute)
    # 3: flagged high by the CRM; 4: an appointment due before anyone else arrived
    await publish(stack.js, cloud_event("customer.priority_changed", f"crm:C-{tag}",
                                        {"site": site, "priority": "high", "links": [ticket(3)]}))
    await publish(stack.js, cloud_event("appointment.booked", f"appointments:A-{tag}", {
        "site": site, "service": "passport", "channel": "web",
        "slot_start": (t0 - timedelta(minutes=5)).isoformat(), "links": [ticket(4)]},
        time=t0 - timedelta(days=1)))
    await publish(stack.js, cloud_event("ticket.called", ticket(5), {"site": site, "counter": "C2"}))
    await publish(stack.js, cloud_event("ticket.called", ticket(6), {"site": site, "counter": "C1"}))
    await publish(stack.js, cloud_event("service.started", ticket(6), {"site": site, "counter": "C1"}))
    manager = bearer(token, "manager", [site])

    async def settled():
        floor = await floor_of(fapi, manager, site)
        found = {c["ticket"]: c for c in floor["customers"]}
        ready = (len(found) == 6 and found["T3"]["priority"] == "high" and found["T4"]["slot_start"]
                 and found["T6"]["stage"] == "in_service" and found["T5"]["stage"] == "called")
        return floor if ready else None

    floor = await eventually(settled)
    customers = floor["customers"]
    assert [c["ticket"] for c in customers] == ["T6", "T5", "T3", "T4", "T1", "T2"]
    assert [c["position"] for c in customers] == [None, None, 1, 2, 3, 4]
    assert [c["stage"] for c in customers] == ["in_service", "called", "waiting", "waiting", "waiting",
                                               "waiting"]
    four = customers[3]
    assert (four["service"], four["eligibility"], four["queue_name"]) == ("passport", None, "tax")
    assert f"appointments:A-{tag}" in four["refs"] and ticket(4) in four["refs"]
    assert datetime.fromisoformat(four["arrived_at"]) == t0 + timedelta(minutes=4)
    assert 25 * 60 < four["wait_s"] < 40 * 60
    assert (four["wait_target_s"], customers[2]["wait_target_s"]) == (1200.0, 900.0), "passport's own target"
    called = customers[1]
    assert called["counter"] == "C2" and datetime.fromisoformat(called["called_at"]) > t0
    assert floor["counters"] == [
        {"counter": "C1", "journey_id": customers[0]["journey_id"], "ticket": "T6", "stage": "in_service"},
        {"counter": "C2", "journey_id": customers[1]["journey_id"], "ticket": "T5", "stage": "called"},
        {"counter": "C3", "journey_id": None, "ticket": None, "stage": None}]
    assert floor["site"]["time_zone"] == "Europe/London" and floor["fallbacks"] == []
    other = bearer(token, "floor_staff", [ACT_SITE])
    assert (await fapi.get(f"/api/v1/sites/{site}/floor", headers=other)).status_code == 403
    connector = {"Authorization": f"Bearer {token('connector', system='queue')}"}
    assert (await fapi.get(f"/api/v1/sites/{site}/floor", headers=connector)).status_code == 403


async def _commands_of(stack: Stack, journey_id: str) -> list[dict[str, Any]]:
    rows = await stack.pool.fetch("SELECT id, command, status, data FROM commands WHERE rule = 'floor' AND"
                                  " journey_id = $1 ORDER BY seq", uuid.UUID(journey_id))
    return [dict(r) for r in rows]


async def test_each_action_is_a_command_the_simulated_queue_carries_out_and_a_repeat_does_nothing_twice(
        fapi, stack, token, tmp_path):
    site = ACT_SITE
    floor, sre = bearer(token, "floor_staff", [site]), bearer(token, "sre", [site])
    queue = still_queue(site)
    async with running(stack.settings, tmp_path, queue):
        served, moved, absent = [await queue.arrive(site, "tax", []) for _ in range(3)]
        journeys = {ref: await eventually(cast(Check, lambda ref=ref: waiting(fapi, sre, ref)))
                    for ref in (served, moved, absent)}

        async def in_queue(ref: str, stage: str, **fields: Any):
            record = queue.records[ref]
            return record.stage == stage and all(record.fields.get(k) == v for k, v in fields.items())

        async def journey(ref: str, stage: str, **fields: Any):
            found = await customer(fapi, sre, site, ref)
            if stage in ("completed", "no_show"):
                found = (await fapi.get(f"/api/v1/journeys/{journeys[ref]['id']}", headers=sre)).json()
            matches = found and found["stage"] == stage and all(found[k] == v for k, v in fields.items())
            return found if matches else None

        step = uuid.uuid4().hex
        first = await act(fapi, floor, journeys[served]["id"], "call", step, counter="C2")
        assert first.status_code == 202, first.text
        answer = first.json()
        assert (answer["via"], answer["action"], answer["repeated"], answer["step"]) == (
            "command", "call", False, None)
        assert answer["command"]["command"] == "ticket.call" and answer["command"]["system"] == "queue"
        assert answer["command"]["data"]["counter"] == "C2" and answer["command"]["data"]["ref"] == served
        assert answer["status"] in ("pending", "sent", "ok")
        await eventually(lambda: in_queue(served, "called", counter="C2"))
        await eventually(lambda: journey(served, "called", counter="C2"))
        again = await act(fapi, floor, journeys[served]["id"], "call", step, counter="C2")
        assert again.status_code == 202
        assert again.json()["repeated"] and again.json()["command"]["id"] == answer["command"]["id"]
        assert again.json()["status"] == "ok", "the repeat tells how the first command stands now"

        for action, stage in (("recall", "called"), ("start", "in_service"), ("complete", "completed")):
            response = await act(fapi, floor, journeys[served]["id"], action)
            assert response.status_code == 202, response.text
            await eventually(lambda: _all_ok(stack, journeys[served]["id"]))  # the queue did it: next one
            await eventually(cast(Check, lambda stage=stage: journey(served, stage)))
        done = await eventually(lambda: journey(served, "completed", outcome="SERVED"))
        assert [e["type"] for e in done["timeline"]].count("ticket.called") == 2, "a recall calls again"
        assert [(c["command"], c["status"]) for c in await _commands_of(stack, journeys[served]["id"])] == [
            ("ticket.call", "ok"), ("ticket.recall", "ok"), ("service.start", "ok"),
            ("service.complete", "ok")]

        transferred = await act(fapi, floor, journeys[moved]["id"], "transfer", queue_name="passport")
        assert transferred.status_code == 202
        await eventually(lambda: journey(moved, "waiting", queue_name="passport"))
        assert queue.records[moved].fields["queue_name"] == "passport"
        no_show = await act(fapi, floor, journeys[absent]["id"], "no_show", reason="NOT_PRESENT")
        assert no_show.status_code == 202
        await eventually(lambda: journey(absent, "no_show"))
        assert queue.records[absent].stage == "no_show"
        assert queue.floors[site].waiting == deque([moved]) and queue.floors[site].busy == {}


async def test_a_step_repeated_after_its_customer_s_journey_was_joined_to_another_is_the_same_step(
        fapi, stack, token):
    site, suffix = ACT_SITE, letters()
    floor, sre = bearer(token, "floor_staff", [site]), bearer(token, "sre", [site])
    booking, ticket = f"appointments:B-{suffix}", f"queue:J-{suffix}"
    slot = (datetime.now(UTC) + timedelta(minutes=10)).isoformat()
    booked = {"site": site, "service": "tax", "channel": "web", "slot_start": slot}
    await publish(stack.js, cloud_event("appointment.booked", booking, booked))
    older = await eventually(lambda: journey_of(fapi, sre, booking))
    await publish(stack.js, cloud_event("ticket.issued", ticket, {"site": site, "ticket": "J1",
                                                                   "queue_name": "main"}))
    walk_in = await eventually(lambda: waiting(fapi, sre, ticket))
    step = uuid.uuid4().hex
    first = await act(fapi, floor, walk_in["id"], "call", step, counter="C1")
    assert first.status_code == 202, first.text
    # the ticket turns out to be the booking's customer: the older journey takes the walk-in's over
    await publish(stack.js, cloud_event("customer.arrived", ticket, {"site": site, "links": [booking]}))
    await eventually(lambda: _joined(fapi, sre, walk_in["id"], older["id"]))
    for journey_id in (walk_in["id"], older["id"]):
        again = await act(fapi, floor, journey_id, "call", step, counter="C1")
        assert again.status_code == 202, again.text  # was 409: "names another step"
        assert again.json()["repeated"] and again.json()["command"]["id"] == first.json()["command"]["id"]


async def _joined(fapi: httpx.AsyncClient, headers: dict[str, str], absorbed: str, survivor: str) -> bool:
    found = await fapi.get(f"/api/v1/journeys/{absorbed}", headers=headers)
    return found.status_code == 200 and found.json()["id"] == survivor


async def _all_ok(stack: Stack, journey_id: str) -> bool:
    return all(c["status"] == "ok" for c in await _commands_of(stack, journey_id))


async def test_actions_are_refused_outside_the_role_the_sites_and_the_customers_stage(fapi, stack, token):
    site, ref = ACT_SITE, f"queue:T-{letters()}"
    await publish(stack.js, cloud_event("customer.arrived", ref, {"site": site}))
    sre = bearer(token, "sre", [site])
    found = await eventually(lambda: customer(fapi, sre, site, ref))
    jid = found["journey_id"]
    floor = bearer(token, "floor_staff", [site])
    assert (await act(fapi, bearer(token, "manager", [site]), jid, "call", counter="C1")).status_code == 403
    other_site = bearer(token, "floor_staff", [ORDER_SITE])
    assert (await act(fapi, other_site, jid, "call", counter="C1")).status_code == 403
    assert (await act(fapi, floor, str(uuid.uuid4()), "call", counter="C1")).status_code == 404
    assert (await act(fapi, floor, jid, "start", counter="C1")).status_code == 409, "not called yet"
    assert (await act(fapi, floor, jid, "call")).status_code == 400, "a call needs a counter"
    elsewhere = await act(fapi, floor, jid, "call", counter="C9")
    assert elsewhere.status_code == 400 and "C1, C2" in elsewhere.json()["title"], "the site's counters only"
    assert (await act(fapi, floor, jid, "transfer")).status_code == 400, "a transfer needs a queue"
    assert (await act(fapi, floor, jid, "dance", counter="C1")).status_code == 400
    bad = await fapi.post(f"/api/v1/journeys/{jid}/actions", json={"action": "call", "counter": "C1"},
                          headers=floor)
    assert bad.status_code == 400 and "step_id" in bad.text
    free_text = await act(fapi, floor, jid, "no_show", reason="customer rang from +44 20 7946 0958")
    assert free_text.status_code == 400, "a reason is a code, never free text"
    number = await act(fapi, floor, jid, "no_show", reason="447946095812")
    assert number.status_code == 400 and "personal data" in number.json()["title"]
    step = uuid.uuid4().hex
    assert (await act(fapi, floor, jid, "call", step, counter="C1")).status_code == 202
    assert (await act(fapi, floor, jid, "no_show", step)).status_code == 409, "one step id, one step"
    assert len(await _commands_of(stack, jid)) == 1
    assert await stack.pool.fetchval("SELECT array_agg(site) FROM audit_log WHERE action = 'floor.action'"
                                     " AND target = $1", f"journey:{jid}") == [site], "once, at its site"


async def test_during_the_queues_fallback_an_action_is_a_manual_step_reported_as_it_stands_and_never_doubled(
        fapi, stack, token):
    site, ref = f"fb-{letters()}", f"queue:T-{letters()}"
    floor = bearer(token, "floor_staff", [site])
    await publish(stack.js, cloud_event("customer.arrived", ref, {"site": site}))
    await publish(stack.js, cloud_event("ticket.issued", ref, {"site": site, "ticket": "T9",
                                                               "queue_name": "tax"}))
    jid = (await eventually(lambda: customer(fapi, floor, site, ref)))["journey_id"]
    fallback = (await start(fapi, floor, site)).json()
    assert fallback["steps"] == ["check_in", "issue_ticket", "call", "recall", "no_show", "transfer", "start",
                                 "complete"]
    assert [f["id"] for f in (await floor_of(fapi, floor, site))["fallbacks"]] == [fallback["id"]]
    step = uuid.uuid4().hex
    # the answer does not wait (floor_apply_wait_s is 0): the step is in the ledger, its event on its way,
    # and a person repeating it, at once and several times over, gets that step, never a second one
    answers = await asyncio.gather(*(act(fapi, floor, jid, "call", step, counter="C3") for _ in range(4)))
    assert {a.status_code for a in answers} <= {201, 202}
    bodies = [a.json() for a in answers]
    assert {(b["via"], b["step"]["fallback_id"], b["step"]["seq"]) for b in bodies} == {
        ("manual", fallback["id"], 1)}
    assert sorted(b["repeated"] for b in bodies) == [False, True, True, True]
    assert all(b["status"] in ("recorded", "applied") for b in bodies)

    async def applied():
        answer = (await act(fapi, floor, jid, "call", step, counter="C3")).json()
        return answer if answer["status"] == "applied" else None

    answer = await eventually(applied)
    assert answer["repeated"] and answer["step"]["stage"] == "called" and answer["step"]["journey_id"] == jid
    assert answer["step"]["ref"] == ref and answer["step"]["step_id"] == step
    ledger = (await fapi.get(f"/api/v1/fallbacks/{fallback['id']}", headers=floor)).json()["ledger"]
    assert [(e["action"], e["step_id"], e["data"]["counter"]) for e in ledger] == [("call", step, "C3")]
    assert await stack.pool.fetchval("SELECT count(*) FROM commands WHERE journey_id = $1 AND rule = 'floor'",
                                     uuid.UUID(jid)) == 0, "nothing goes to the queue system while it is down"
    # each step once the one before is applied: the answer does not wait for it, and completing is only for a
    # customer in service (a loaded run once asked before the start was applied, and was refused)
    started = await act(fapi, floor, jid, "start")
    assert started.status_code in (201, 202) and started.json()["via"] == "manual", started.text
    await eventually(lambda: _stage(fapi, floor, jid, "in_service"))
    completed = await act(fapi, floor, jid, "complete")
    assert completed.status_code in (201, 202) and completed.json()["via"] == "manual", completed.text
    await eventually(lambda: _stage(fapi, floor, jid, "completed"))
    ledger = (await fapi.get(f"/api/v1/fallbacks/{fallback['id']}", headers=floor)).json()["ledger"]
    assert [(e["action"], e["data"].get("counter"), e["data"].get("outcome")) for e in ledger] == [
        ("call", "C3", None), ("start", "C3", None), ("complete", None, "SERVED")]


async def _stage(api: httpx.AsyncClient, headers: dict[str, str], jid: str, stage: str) -> bool:
    return (await api.get(f"/api/v1/journeys/{jid}", headers=headers)).json()["stage"] == stage


async def test_the_ledger_of_a_fallback_is_its_own_when_another_started_later(fapi, token):
    site = f"two-{letters()}"
    floor = bearer(token, "floor_staff", [site])
    by_queue = (await start(fapi, floor, site)).json()
    for _ in range(3):
        assert (await fapi.post(f"/api/v1/fallbacks/{by_queue['id']}/actions", json={"action": "check_in"},
                                headers=floor)).status_code in (201, 202)
    by_crm = (await start(fapi, floor, site, system="crm", reason="crm unreachable")).json()
    assert by_crm["steps"] == ["set_priority"] and by_crm["id"] > by_queue["id"]
    queue_view = (await fapi.get(f"/api/v1/fallbacks/{by_queue['id']}", headers=floor)).json()
    crm_view = (await fapi.get(f"/api/v1/fallbacks/{by_crm['id']}", headers=floor)).json()
    assert (queue_view["system"], queue_view["ledger_size"], len(queue_view["ledger"])) == ("queue", 3, 3)
    assert (crm_view["system"], crm_view["ledger_size"], crm_view["ledger"]) == ("crm", 0, [])
    refused = await fapi.post(f"/api/v1/fallbacks/{by_crm['id']}/actions", json={"action": "check_in"},
                              headers=floor)
    assert refused.status_code == 400 and "set_priority" in refused.json()["title"]


async def test_a_fallback_step_repeated_with_its_step_id_is_answered_as_it_stands_even_once_refused(
        fapi, stack, token):
    site = f"rep-{letters()}"
    floor = bearer(token, "floor_staff", [site])
    fallback = (await start(fapi, floor, site)).json()
    url = f"/api/v1/fallbacks/{fallback['id']}/actions"
    step = uuid.uuid4().hex
    first = await fapi.post(url, json={"action": "check_in", "step_id": step}, headers=floor)
    assert first.status_code in (201, 202), first.text

    async def applied():
        again = await fapi.post(url, json={"action": "check_in", "step_id": step}, headers=floor)
        return again.json() if again.status_code == 201 else None

    again = await eventually(applied)
    assert (again["seq"], again["ref"], again["status"], again["repeated"]) == (
        1, first.json()["ref"], "applied", True)
    other = await fapi.post(url, json={"action": "issue_ticket", "ref": again["ref"], "step_id": step},
                            headers=floor)
    assert other.status_code == 409, "a step id names one step"
    async with refusing_site(stack.pool, site):
        refused_step = uuid.uuid4().hex
        refused = await fapi.post(url, json={"action": "check_in", "step_id": refused_step}, headers=floor)

        async def refused_for_good():
            answer = await fapi.post(url, json={"action": "check_in", "step_id": refused_step}, headers=floor)
            return answer.json() if answer.status_code == 400 else None

        problem = await eventually(refused_for_good)
    assert refused.status_code in (202, 400)
    assert (problem["seq"], problem["status"]) == (2, "refused") and problem["failure_id"]
    ledger = (await fapi.get(f"/api/v1/fallbacks/{fallback['id']}", headers=floor)).json()["ledger"]
    assert [(e["seq"], e["step_id"]) for e in ledger] == [(1, step), (2, refused_step)], "never a second step"
    ended = await fapi.post(f"/api/v1/fallbacks/{fallback['id']}/end", json={}, headers=floor)
    assert ended.status_code == 200
    late = await fapi.post(url, json={"action": "check_in", "step_id": step}, headers=floor)
    assert late.status_code == 201 and late.json()["repeated"], "a late repeat still gets the first answer"
