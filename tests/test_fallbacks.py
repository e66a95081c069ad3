"""Manual fallback end to end: start and end, manual steps as `/manual/<user>` events applied by the apply
worker, the ledger, manual ticket numbers, refusals, the audit log and the live `fallbacks` topic."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import msgspec

from backend.fallbacks.actions import walk_in_ref
from backend.ingest.own_events import SIGNATURE_HEADER
from switchboard.privacy import looks_personal_identifier
from tests.support.database import refusing_site
from tests.support.events import cloud_event, publish
from tests.support.fallbacks import act, acted, start
from tests.support.live import connect, is_update, receive_until, subscribe
from tests.support.waits import eventually

USER = "test-floor_staff"  # the floor token's `sub`: a safe code, so it is the user in `/manual/<user>`


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def audit_of(api: httpx.AsyncClient, token, fallback_id: int) -> list[dict[str, Any]]:
    response = await api.get("/api/v1/audit", params={"actor": USER, "limit": 500},
                             headers=bearer(token("sre")))
    assert response.status_code == 200, response.text
    return [e for e in reversed(response.json()["items"]) if e["target"] == f"fallback:{fallback_id}"]


async def test_a_fallback_starts_and_ends_with_reasons_once_per_site_and_system_and_is_audited(api, token,
                                                                                                uid):
    site = f"site-{uid}"
    floor = bearer(token("floor_staff", [site]))
    response = await start(api, floor, site)
    assert response.status_code == 201, response.text
    fallback = response.json()
    assert (fallback["site"], fallback["system"], fallback["status"], fallback["reason"],
            fallback["started_by"]) == (site, "queue", "active", "queue system unreachable", USER)
    assert (await start(api, floor, site, reason="again")).status_code == 409
    # another system: its own
    assert (await start(api, floor, site, system="appointments")).status_code == 201

    assert (await start(api, bearer(token("manager", [site])), site, system="crm")).status_code == 403
    elsewhere = bearer(token("floor_staff", ["elsewhere"]))
    assert (await start(api, elsewhere, site, system="crm")).status_code == 403
    assert (await start(api, floor, site, system="nosuch")).status_code == 400
    assert (await start(api, floor, site, system="manual")).status_code == 400
    assert (await start(api, floor, site, system="crm", reason="")).status_code == 400

    listed = (await api.get("/api/v1/fallbacks", params={"site": site, "status": "active"},
                            headers=bearer(token("manager", [site])))).json()["items"]
    assert {(f["system"], f["status"]) for f in listed} == {("queue", "active"), ("appointments", "active")}
    assert (await api.get("/api/v1/fallbacks", params={"site": site},
                          headers=bearer(token("manager", ["elsewhere"])))).status_code == 403

    ended = await api.post(f"/api/v1/fallbacks/{fallback['id']}/end", json={"reason": "queue system is back"},
                           headers=floor)
    assert ended.status_code == 200, ended.text
    assert (ended.json()["status"], ended.json()["end_reason"], ended.json()["ended_by"]) == (
        "replaying", "queue system is back", USER)
    ended_again = await api.post(f"/api/v1/fallbacks/{fallback['id']}/end", json={}, headers=floor)
    assert ended_again.status_code == 409
    # the old one is no longer active
    assert (await start(api, floor, site, reason="down again")).status_code == 201

    entries = await audit_of(api, token, fallback["id"])
    assert [(e["action"], e["reason"], e["roles"]) for e in entries] == [
        ("fallback.start", "queue system unreachable", ["floor_staff"]),
        ("fallback.end", "queue system is back", ["floor_staff"]),
    ]
    assert entries[1]["result"] == {"status": "replaying", "ledger_size": 0}


async def journey(api: httpx.AsyncClient, headers: dict[str, str], journey_id: str) -> dict[str, Any]:
    response = await api.get(f"/api/v1/journeys/{journey_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_manual_steps_move_journeys_as_manual_events_recorded_in_the_ledger_in_order(
        api, backend, js, token, uid):
    site, appointment = f"site-{uid}", f"appointments:A-{uid}"
    floor_token = token("floor_staff", [site])
    floor, reader = bearer(floor_token), bearer(token("manager", [site]))
    slot = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    await publish(js, cloud_event("appointment.booked", appointment, {"site": site, "service": "passport",
                                                                      "channel": "web", "slot_start": slot}))
    await eventually(lambda: _journey_by_ref(api, reader, appointment))

    async with connect(backend, floor_token) as ws:
        assert (await subscribe(ws, ["fallbacks"]))["fallbacks"]["data"] == []
        fallback = (await start(api, floor, site)).json()
        started, _ = await receive_until(ws, is_update("fallbacks"))
        assert (started["site"], started["key"], started["data"]["ledger_size"]) == (
            site, str(fallback["id"]), 0)

        booked_in = await acted(api, floor, fallback["id"], action="check_in", ref=appointment)
        walk_in = await acted(api, floor, fallback["id"], action="check_in")
        assert (booked_in["stage"], walk_in["stage"]) == ("arrived", "arrived")
        assert walk_in["ref"].startswith("queue:W-") and walk_in["journey_id"] != booked_in["journey_id"]
        first = await acted(api, floor, fallback["id"], action="issue_ticket", ref=appointment,
                            queue_name="passports")
        second = await acted(api, floor, fallback["id"], action="issue_ticket", ref=walk_in["ref"])
        assert (first["ticket"], second["ticket"], first["stage"]) == ("M-001", "M-002", "waiting")
        day = datetime.now(UTC).strftime("%Y%m%d")
        assert first["ticket_ref"] == f"manual:{site}.{day}.M-001"
        # the manual ticket is a reference of its own: staff call it by its number
        called = await acted(api, floor, fallback["id"], action="call", ref=first["ticket_ref"], counter="C1")
        in_service = await acted(api, floor, fallback["id"], action="start", ref=appointment, counter="C1")
        done = await acted(api, floor, fallback["id"], action="complete", ref=appointment, outcome="DONE")
        assert [s["stage"] for s in (called, in_service, done)] == ["called", "in_service", "completed"]
        steps = [booked_in, walk_in, first, second, called, in_service, done]
        assert [s["seq"] for s in steps] == [1, 2, 3, 4, 5, 6, 7]
        assert {s["event_source"] for s in steps} == {f"/manual/{USER}"}

        last, _ = await receive_until(ws, is_update("fallbacks", lambda f: f["data"]["ledger_size"] == 7))
        assert last["data"]["status"] == "active"

    served = await journey(api, reader, booked_in["journey_id"])
    assert (served["stage"], served["ticket"], served["queue_name"], served["counter"],
            served["outcome"]) == ("completed", "M-001", "passports", "C1", "DONE")
    assert sorted(served["refs"]) == sorted([appointment, first["ticket_ref"]])
    assert [(t["source"], t["type"]) for t in served["timeline"]] == [
        ("/appointments", "appointment.booked"), (f"/manual/{USER}", "customer.arrived"),
        (f"/manual/{USER}", "ticket.issued"), (f"/manual/{USER}", "ticket.called"),
        (f"/manual/{USER}", "service.started"), (f"/manual/{USER}", "service.completed")]
    waiting = await journey(api, reader, walk_in["journey_id"])
    assert (waiting["stage"], waiting["ticket"], waiting["queue_name"]) == ("waiting", "M-002", "manual")

    detail = (await api.get(f"/api/v1/fallbacks/{fallback['id']}", headers=reader)).json()
    assert [(e["seq"], e["action"], e["ref"], e["event_id"]) for e in detail["ledger"]] == [
        (s["seq"], s["action"], s["ref"], s["event_id"]) for s in steps]
    assert {(e["actor"], e["replay_status"]) for e in detail["ledger"]} == {(USER, "pending")}
    assert detail["ledger"][2]["data"] == {"site": site, "ticket": "M-001", "queue_name": "passports",
                                           "links": [first["ticket_ref"]]}
    # the ledger a page at a time, from the step a reader has: the same steps, each once
    ledger = f"/api/v1/fallbacks/{fallback['id']}/ledger"
    pages = [(await api.get(ledger, params={"after": after, "limit": 3}, headers=reader)).json()
             for after in (0, 3, 6)]
    assert [([e["seq"] for e in p["items"]], p["more"]) for p in pages] == [
        ([1, 2, 3], True), ([4, 5, 6], True), ([7], False)]
    assert [e for p in pages for e in p["items"]] == detail["ledger"]
    assert (await api.get(ledger, params={"after": 7}, headers=reader)).json() == {"items": [], "more": False}
    outsider = bearer(token("manager", [f"other-{uid}"]))
    assert (await api.get(ledger, headers=outsider)).status_code == 403
    assert (await api.get(f"/api/v1/fallbacks/{2**62}/ledger", headers=reader)).status_code == 404
    assert (await api.get(ledger, params={"after": 2**40}, headers=reader)).status_code == 400
    entries = await audit_of(api, token, fallback["id"])
    assert [e["action"] for e in entries] == ["fallback.start"] + ["fallback.action"] * 7
    assert [(e["result"]["seq"], e["result"]["action"], e["result"]["event_id"]) for e in entries[1:]] == [
        (s["seq"], s["action"], s["event_id"]) for s in steps]


async def _journey_by_ref(api, headers, ref):
    items = (await api.get("/api/v1/journeys", params={"ref": ref}, headers=headers)).json()["items"]
    return items[0] if items else None


async def test_a_customer_called_already_is_not_called_again_by_a_second_desk(api, token, uid):
    """Two staff pressing "Call next" on the same list: the second is refused, whether the first call is
    applied yet or not, and for whichever of the customer's references it names; a recall calls again."""
    site = f"site-{uid}"
    floor = bearer(token("floor_staff", [site]))
    fallback = (await start(api, floor, site)).json()
    walk_in = await acted(api, floor, fallback["id"], action="check_in")
    ticket = await acted(api, floor, fallback["id"], action="issue_ticket", ref=walk_in["ref"])
    first = await act(api, floor, fallback["id"], action="call", ref=walk_in["ref"], counter="C1")
    second = await act(api, floor, fallback["id"], action="call", ref=ticket["ticket_ref"], counter="C2")
    assert first.status_code == 201, first.text
    assert second.status_code == 409 and "recall them" in second.json()["title"], second.text
    recalled = await acted(api, floor, fallback["id"], action="recall", ref=walk_in["ref"], counter="C1")
    assert recalled["stage"] == "called"


async def test_a_step_whose_event_the_bus_never_took_is_sent_again_when_the_step_is_repeated(
        api, pool: asyncpg.Pool, token, uid):
    """The ledger kept the step, then the backend died before publishing its event (or NATS did not confirm
    it: a 503 that says to repeat the step). Repeating it with the same step id sends the same event, so the
    walk-in is on the floor now, not only once the fallback ends."""
    site = f"site-{uid}"
    floor = bearer(token("floor_staff", [site]))
    fallback = (await start(api, floor, site)).json()
    ref, event_id, step_id = walk_in_ref("queue"), f"lost-{uid}", f"step-{uid}"
    await pool.execute(
        "INSERT INTO fallback_ledger (fallback_id, seq, action, ref, event_source, event_id, actor, data, at,"
        " step_id) VALUES ($1, 1, 'check_in', $2, $3, $4, $5, $6::jsonb, now(), $7)",
        fallback["id"], ref, f"/manual/{USER}", event_id, USER, msgspec.json.encode({"site": site}).decode(),
        step_id)
    again = await acted(api, floor, fallback["id"], action="check_in", step_id=step_id)
    assert (again["seq"], again["ref"], again["event_id"]) == (1, ref, event_id)
    assert (again["status"], again["stage"], again["repeated"]) == ("applied", "arrived", True), again
    # once applied, a repeat only reads it
    read = await acted(api, floor, fallback["id"], action="check_in", step_id=step_id)
    assert (read["status"], read["repeated"]) == ("applied", True)


async def test_concurrent_ticket_requests_get_distinct_numbers_in_order(api, token, uid):
    site = f"site-{uid}"
    floor = bearer(token("floor_staff", [site]))
    by_queue = (await start(api, floor, site)).json()
    walk_ins = [await acted(api, floor, by_queue["id"], action="check_in") for _ in range(6)]
    # only the queue's fallback issues tickets (a crm fallback has its own steps); concurrent requests
    issued = await asyncio.gather(*(
        acted(api, floor, by_queue["id"], action="issue_ticket", ref=w["ref"]) for w in walk_ins))
    assert sorted(i["ticket"] for i in issued) == [f"M-00{n}" for n in range(1, 7)]
    ledger = (await api.get(f"/api/v1/fallbacks/{by_queue['id']}", headers=floor)).json()["ledger"]
    tickets = [e["data"]["ticket"] for e in ledger if e["action"] == "issue_ticket"]
    assert tickets == sorted(tickets)  # numbered in the order the ledger took them
    assert [e["seq"] for e in ledger] == list(range(1, len(ledger) + 1))


async def test_manual_steps_are_refused_outside_the_sites_the_role_or_an_active_fallback(
        api, pool: asyncpg.Pool, token, uid):
    site, other = f"site-{uid}", f"other-{uid}"
    floor = bearer(token("floor_staff", [site]))
    fallback = (await start(api, floor, site)).json()
    walk_in = await acted(api, floor, fallback["id"], action="check_in")

    other_floor = bearer(token("floor_staff", [other]))
    assert (await act(api, other_floor, fallback["id"], action="check_in")).status_code == 403
    manager = bearer(token("manager", [site]))
    assert (await act(api, manager, fallback["id"], action="check_in")).status_code == 403
    no_counter = await act(api, floor, fallback["id"], action="call", ref=walk_in["ref"])
    assert no_counter.status_code == 400
    assert (await act(api, floor, fallback["id"], action="complete", ref=walk_in["ref"])).status_code == 400
    assert (await act(api, floor, fallback["id"], action="call", counter="C1")).status_code == 400  # no ref
    assert (await act(api, floor, fallback["id"], action="dance", ref=walk_in["ref"])).status_code == 400
    assert (await act(api, floor, fallback["id"], action="call", ref=f"queue:nope-{uid}",
                      counter="C1")).status_code == 404
    elsewhere = (await start(api, bearer(token("floor_staff", [other])), other)).json()
    stranger = await acted(api, bearer(token("floor_staff", [other])), elsewhere["id"], action="check_in")
    assert (await act(api, floor, fallback["id"], action="call", ref=stranger["ref"],
                      counter="C1")).status_code == 403
    assert (await act(api, floor, 10**12, action="check_in")).status_code == 404

    sre = bearer(token("sre", "*"))
    ended = await api.post(f"/api/v1/fallbacks/{fallback['id']}/end", json={}, headers=sre)
    assert ended.status_code == 200
    assert (await act(api, floor, fallback["id"], action="call", ref=walk_in["ref"],
                      counter="C1")).status_code == 409
    ledger = (await api.get(f"/api/v1/fallbacks/{fallback['id']}", headers=floor)).json()["ledger"]
    assert [e["action"] for e in ledger] == ["check_in"]
    assert await pool.fetchval("SELECT count(*) FROM events"
                               " WHERE source LIKE '/manual/%' AND data->>'site' = $1", site) == 1


async def test_a_manual_step_whose_event_is_refused_says_why_and_stays_in_the_ledger_as_refused(
        api, pool: asyncpg.Pool, token, uid):
    site = f"site-{uid}"
    floor = bearer(token("floor_staff", [site]))
    fallback = (await start(api, floor, site)).json()
    async with refusing_site(pool, site):
        response = await act(api, floor, fallback["id"], action="check_in")
    assert response.status_code == 400, response.text
    problem = response.json()
    assert "apply_error" in problem["title"] and "closed for maintenance" in problem["title"]
    failure = (await api.get(f"/api/v1/failures/{problem['failure_id']}", headers=floor)).json()
    assert (failure["kind"], failure["event_source"]) == ("apply_error", f"/manual/{USER}")
    [step] = (await api.get(f"/api/v1/fallbacks/{fallback['id']}", headers=floor)).json()["ledger"]
    assert (step["seq"], step["action"], step["replay_status"]) == (problem["seq"], "check_in", "refused")
    assert step["event_id"] == failure["event_id"]
    entries = await audit_of(api, token, fallback["id"])
    recorded, refused = [e for e in entries if e["action"] == "fallback.action"]
    assert recorded["result"]["event_id"] == failure["event_id"]
    assert refused["result"]["outcome"] == "refused" and refused["result"]["failure_id"] == failure["id"]


async def test_only_the_backend_publishes_manual_events(api, js, pool: asyncpg.Pool, token, uid):
    event = cloud_event("customer.arrived", f"manual:W-{uid}", {"site": f"site-{uid}"},
                        source="/manual/someone")
    for role, system in (("connector", "manual"), ("admin", None)):
        response = await api.post("/api/v1/events", json=event, headers=bearer(token(role, "*", system)))
        assert response.status_code == 202, response.text
        [rejected] = response.json()["rejected"]
        assert rejected["kind"] == "unauthorized_source"
        assert rejected["reason"] == "only Switchboard itself publishes events from /manual"
    event = {**event, "id": f"nats-{uid}"}
    await publish(js, event)  # straight on NATS, as any client there could, without the backend's signature

    async def refused():
        return await pool.fetchval("SELECT reason FROM failures WHERE event_source = '/manual/someone'"
                                   " AND event_id = $1", event["id"])

    assert await eventually(refused) == "only Switchboard itself publishes as /manual"
    assert await pool.fetchval("SELECT count(*) FROM journey_refs WHERE ref = $1", event["subject"]) == 0

    # a signature header that is not even ASCII is no signature (comparing it once stopped the apply worker,
    # again at every redelivery)
    forged = {**event, "id": f"forged-{uid}"}
    await js.publish(f"svc.events.manual.{forged['type']}", msgspec.json.encode(forged),
                     headers={"Nats-Msg-Id": f"forged-{uid}", SIGNATURE_HEADER: "é" * 64})
    reason = await eventually(lambda: pool.fetchval("SELECT reason FROM failures WHERE event_id = $1",
                                                    forged["id"]))
    assert reason == "only Switchboard itself publishes as /manual"


def test_a_walk_in_reference_never_looks_like_personal_data():
    """One draw in 280 of twelve hex digits is all decimal, which the personal-data check takes for a
    number."""
    assert looks_personal_identifier("queue:W-123456789012")
    assert not any(looks_personal_identifier(walk_in_ref("queue")) for _ in range(5000))


async def test_a_manual_step_carrying_personal_data_is_refused_before_the_ledger_keeps_it(
        api, pool: asyncpg.Pool, token, uid):
    site = f"site-{uid}"
    floor = bearer(token("floor_staff", [site]))
    fallback = (await start(api, floor, site)).json()
    walk_in = (await acted(api, floor, fallback["id"], action="check_in"))["ref"]
    issued = await acted(api, floor, fallback["id"], action="issue_ticket", ref=walk_in)
    ticket = issued["ticket_ref"]
    for step in ({"action": "call", "ref": ticket, "counter": "07700900123"},
                 {"action": "complete", "ref": ticket, "outcome": "John.Smith"},
                 {"action": "transfer", "ref": ticket, "queue_name": "Ada_Lovelace"},
                 {"action": "call", "ref": "queue:07700900123", "counter": "C1"}):
        refused = await act(api, floor, fallback["id"], **step)
        assert refused.status_code == 400, (step, refused.text)
        assert "looks like personal data" in refused.json()["title"], refused.text
    ledger = await pool.fetch("SELECT data::text, ref FROM fallback_ledger WHERE fallback_id = $1",
                              fallback["id"])
    assert len(ledger) == 2
    assert not any(marker in str(list(map(tuple, ledger)))
                   for marker in ("07700900123", "John.Smith", "Ada_Lovelace"))
