"""Finding journeys (`GET /api/v1/journeys?q=`), one journey's page with its commands, failures and drift,
and the rules in force with what each produced today: fed through NATS like production traffic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from backend.journeys.services import prefix_range
from tests.support.events import cloud_event, phone_booking, publish
from tests.support.waits import eventually


def auth(token, role, sites):
    return {"Authorization": f"Bearer {token(role, sites)}"}


async def found(api, headers, **params):
    response = await api.get("/api/v1/journeys", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_search_prefix_ranges_hold_exactly_the_strings_with_the_prefix():
    assert prefix_range("T-0") == ("t-0", "t-1")
    assert prefix_range("az\U0010ffff") == ("az\U0010ffff", "a{")
    assert prefix_range("a\ud7ff") == ("a\ud7ff", "a\ue000")


async def test_search_finds_a_journey_by_the_start_of_a_reference_or_ticket_number_within_its_sites(
        api, js, token, uid):
    site, elsewhere = f"find-{uid}", f"find-other-{uid}"
    walk_in, booking = f"queue:W{uid}-17", f"appointments:B{uid}-9"
    await publish(js, cloud_event("ticket.issued", walk_in, {"site": site, "ticket": f"K{uid}-042",
                                                            "queue_name": "main"}))
    await publish(js, phone_booking(booking, site))
    await publish(js, cloud_event("customer.arrived", f"queue:W{uid}-18", {"site": elsewhere}))
    manager = auth(token, "manager", [site])
    everywhere = auth(token, "manager", "*")
    await eventually(lambda: _count(api, everywhere, 2, q=f"W{uid}-1"))

    # by the whole reference's start, its id alone, any case; a ticket number; nothing else
    assert [j["refs"] for j in (await found(api, manager, q=f"queue:w{uid}-1"))["items"]] == [[walk_in]]
    assert [j["refs"] for j in (await found(api, manager, q=f"B{uid}"))["items"]] == [[booking]]
    assert [j["ticket"] for j in (await found(api, manager, q=f"k{uid}-04"))["items"]] == [f"K{uid}-042"]
    assert (await found(api, manager, q=f"X{uid}"))["items"] == []
    # the token's sites bound the answer; naming another site is refused
    assert len((await found(api, everywhere, q=f"W{uid}-1"))["items"]) == 2
    assert len((await found(api, manager, q=f"W{uid}-1"))["items"]) == 1
    refused = await api.get("/api/v1/journeys", params={"q": f"W{uid}", "site": elsewhere}, headers=manager)
    assert refused.status_code == 403
    assert refused.headers["content-type"].startswith("application/problem+json")
    # stage and time window
    assert [j["stage"] for j in (await found(api, manager, q=f"B{uid}", stage="booked"))["items"]] \
        == ["booked"]
    assert (await found(api, manager, q=f"B{uid}", stage="waiting"))["items"] == []
    later = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
    assert (await found(api, manager, q=f"B{uid}", since=later))["items"] == []
    assert len((await found(api, manager, q=f"B{uid}", until=later))["items"]) == 1
    # paged like every list
    first = await found(api, everywhere, q=f"W{uid}", limit=1)
    second = await found(api, everywhere, q=f"W{uid}", limit=1, cursor=first["next_cursor"])
    assert first["next_cursor"] and second["next_cursor"] is None
    assert {first["items"][0]["id"], second["items"][0]["id"]} == {
        j["id"] for j in (await found(api, everywhere, q=f"W{uid}"))["items"]}


async def test_search_refuses_bad_input_with_a_problem(api, token):
    manager = auth(token, "manager", "*")
    for q in ("", "x" * 101, "a\x00b", "a\nb", "\x85abc", "a\u202eb"):  # the last two found in review
        response = await api.get("/api/v1/journeys", params={"q": q}, headers=manager)
        assert response.status_code == 400, (q, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    connector = {"Authorization": f"Bearer {token('connector', '*', 'queue')}"}
    assert (await api.get("/api/v1/journeys", params={"q": "a"}, headers=connector)).status_code == 403


async def test_search_reads_only_the_index_range_of_its_prefix(pool):
    """The plan of the search: index scans on the prefix indexes, never a scan of all journeys or refs."""
    low, high = prefix_range("q:t-1")
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")  # a table this small is cheaper to scan whole
        plan = "\n".join(r[0] for r in await conn.fetch(
            "EXPLAIN SELECT journey_id FROM journey_refs r WHERE lower(r.ref) ~>=~ $1 AND lower(r.ref) ~<~ $2"
            " UNION SELECT r.journey_id FROM journey_refs r"
            " WHERE lower(substr(r.ref, strpos(r.ref, ':') + 1)) ~>=~ $1"
            " AND lower(substr(r.ref, strpos(r.ref, ':') + 1)) ~<~ $2 UNION SELECT t.id FROM journeys t"
            " WHERE lower(t.state #>> '{ticket,1,ticket}') ~>=~ $1"
            " AND lower(t.state #>> '{ticket,1,ticket}') ~<~ $2", low, high))
    for index in ("journey_refs_prefix", "journey_refs_id_prefix", "journeys_ticket_prefix"):
        assert index in plan, plan
    assert "Seq Scan" not in plan, plan


async def test_search_then_drill_down_shows_the_journeys_commands_failures_and_drift(api, js, pool, token,
                                                                                      uid):
    site = f"drill-{uid}"
    booking = f"appointments:D{uid}"
    await publish(js, phone_booking(booking, site))  # the phone rule sends `visit.context`
    manager = auth(token, "manager", [site])
    [journey] = (await eventually(lambda: _count(api, manager, 1, q=f"D{uid}")))["items"]
    failure = await pool.fetchval(
        "INSERT INTO failures (dedupe_key, kind, system, site, subject, reason, payload) VALUES"
        " ($1, 'invalid_event', 'appointments', $2, $3, 'drill', '{}') RETURNING id",
        f"drill-{uid}", site, booking)
    run = await pool.fetchval(
        "INSERT INTO reconciliation_runs (system, site, day, trigger, status, finished_at)"
        " VALUES ('appointments', $1, current_date, 'on_demand', 'done', now()) RETURNING id", site)
    drift = await pool.fetchval(
        "INSERT INTO drift_items (dedupe_key, run_id, system, site, ref, kind, field, ours, theirs)"
        " VALUES ($1, $2, 'appointments', $3, $4, 'state_mismatch', 'service', '\"passport\"', '\"visa\"')"
        " RETURNING id", f"drill|{uid}", run, site, booking)

    async def detail():
        body = (await api.get(f"/api/v1/journeys/{journey['id']}", headers=manager)).json()
        return body if body["commands"] else None

    body = await eventually(detail)
    [command] = body["commands"]
    assert (command["command"], command["rule"], command["journey_id"]) == (
        "visit.context", "visit-context-for-phone-bookings", journey["id"])
    assert {"attempt_history", "status", "last_error", "resendable"} <= set(command)
    assert [f["id"] for f in body["failures"]] == [failure]
    assert [(d["id"], d["field"]) for d in body["drift"]] == [(drift, "service")]
    assert [e["type"] for e in body["timeline"]] == ["appointment.booked"]
    outsider = auth(token, "manager", ["elsewhere"])
    assert (await api.get(f"/api/v1/journeys/{journey['id']}", headers=outsider)).status_code == 403

    # the rule that produced the command counts it today, for the caller's sites only
    rules = (await api.get("/api/v1/rules", headers=manager)).json()
    produced = {r["name"]: r["produced_today"] for r in rules["items"]}
    assert produced["visit-context-for-phone-bookings"] == 1 and sum(produced.values()) == 1
    assert {o["system"]: o["stages"] for o in rules["ownership"]}["appointments"] == [
        "booked", "cancelled", "no_show"]
    floor_elsewhere = auth(token, "floor_staff", ["elsewhere"])
    assert sum(r["produced_today"] for r in (await api.get("/api/v1/rules", headers=floor_elsewhere)).json()[
        "items"]) == 0
    assert (await api.get("/api/v1/rules", params={"site": site}, headers=floor_elsewhere)).status_code == 403


async def _count(api, headers, n, **params):
    body = await found(api, headers, **params)
    return body if len(body["items"]) >= n else None
