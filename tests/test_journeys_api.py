"""The read API over journeys, flow and capacity, fed through NATS like production traffic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backend.paging import encode_cursor
from tests.support.events import cloud_event, publish
from tests.support.waits import eventually


@pytest.fixture
def reader(token):
    return {"Authorization": f"Bearer {token('manager')}"}


async def test_keyset_paging_visits_every_journey_once(api, js, reader, uid):
    site = f"page-{uid}"
    refs = [f"queue:T{n}-{uid}" for n in range(7)]
    for ref in refs:
        await publish(js, cloud_event("customer.arrived", ref, {"site": site}))

    async def all_there():
        page = (await api.get("/api/v1/journeys", params={"site": site, "limit": 500}, headers=reader)).json()
        return len(page["items"]) == len(refs)

    await eventually(all_there)
    seen, cursor, pages = [], None, 0
    while True:
        params = {"site": site, "limit": 3, **({"cursor": cursor} if cursor else {})}
        page = (await api.get("/api/v1/journeys", params=params, headers=reader)).json()
        seen += [r for j in page["items"] for r in j["refs"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(refs) and pages == 3


async def test_a_link_merges_two_journeys_and_the_absorbed_id_still_answers(api, js, reader, uid):
    site = f"merge-{uid}"
    appt, walk_in = f"appointments:A-{uid}", f"queue:T-{uid}"
    t0 = datetime.now(UTC) - timedelta(minutes=10)
    await publish(js, cloud_event("appointment.booked", appt, {
        "site": site, "service": "benefits", "channel": "web", "slot_start": t0.isoformat()}, time=t0))
    await publish(js, cloud_event("customer.arrived", walk_in, {"site": site},
                                  time=t0 + timedelta(minutes=1)))

    async def journeys_of_site():
        items = (await api.get("/api/v1/journeys", params={"site": site}, headers=reader)).json()["items"]
        return items if len(items) == 2 else None

    first, second = await eventually(journeys_of_site)
    # the queue learns which appointment the walk-in belongs to
    await publish(js, cloud_event("ticket.issued", walk_in,
                                  {"site": site, "ticket": "T-7", "queue_name": "main", "links": [appt]},
                                  time=t0 + timedelta(minutes=2)))

    async def merged():
        items = (await api.get("/api/v1/journeys", params={"site": site}, headers=reader)).json()["items"]
        return items if len(items) == 1 else None

    [journey] = await eventually(merged)
    assert sorted(journey["refs"]) == sorted([appt, walk_in])
    assert (journey["stage"], journey["service"], journey["ticket"]) == ("waiting", "benefits", "T-7")
    assert journey["id"] in {first["id"], second["id"]}
    for old in (first["id"], second["id"]):
        detail = (await api.get(f"/api/v1/journeys/{old}", headers=reader)).json()
        assert detail["id"] == journey["id"]
        assert [e["type"] for e in detail["timeline"]] == ["appointment.booked", "customer.arrived",
                                                           "ticket.issued"]


async def test_stage_filter_and_unknown_journey(api, js, reader, uid):
    site = f"stage-{uid}"
    await publish(js, cloud_event("customer.arrived", f"queue:A-{uid}", {"site": site}))
    await publish(js, cloud_event("appointment.no_show", f"appointments:N-{uid}", {"site": site}))

    async def both():
        items = (await api.get("/api/v1/journeys", params={"site": site}, headers=reader)).json()["items"]
        return len(items) == 2

    await eventually(both)
    no_shows = (await api.get("/api/v1/journeys", params={"site": site, "stage": "no_show"},
                              headers=reader)).json()
    assert [j["refs"] for j in no_shows["items"]] == [[f"appointments:N-{uid}"]]
    missing = await api.get("/api/v1/journeys/00000000-0000-4000-8000-000000000000", headers=reader)
    assert missing.status_code == 404 and missing.json()["status"] == 404


async def test_times_and_cursors_no_database_could_take_are_refused_with_a_problem(api, token):
    """Found in review: each answered 500 (asyncpg could not send the time, Postgres refused the offset)."""
    admin = {"Authorization": f"Bearer {token('admin')}"}
    year_one = "0001-01-01T00:00:00+14:00"  # before year 1 in UTC
    some_id = "00000000-0000-4000-8000-000000000000"
    asked = [("/api/v1/journeys", {"since": year_one}),
             ("/api/v1/journeys", {"until": "9999-12-31T23:59:59-14:00"}),
             ("/api/v1/audit", {"since": year_one}),
             ("/api/v1/journeys", {"cursor": encode_cursor(year_one, some_id)}),
             ("/api/v1/failures", {"order": "impact", "cursor": encode_cursor(-5)})]
    for path, params in asked:
        response = await api.get(path, params=params, headers=admin)
        assert response.status_code == 400, (path, params, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")


async def test_capacity_keeps_the_latest_report_whatever_the_arrival_order(api, js, reader, uid):
    site = f"cap-{uid}"
    now = datetime.now(UTC)

    def report(queue_length: int, at: datetime) -> dict:
        return cloud_event("capacity.changed", f"site:{site}", {
            "site": site, "counters_open": 4, "counters_busy": 3, "staff_on_duty": 5,
            "queue_length": queue_length}, source="/queue", time=at)

    await publish(js, report(9, now))
    await publish(js, report(2, now - timedelta(minutes=5)))  # older, arrives later: must not win
    marker = f"queue:M-{uid}"
    await publish(js, cloud_event("customer.arrived", marker, {"site": site}))

    async def capacity():
        items = (await api.get("/api/v1/capacity", params={"site": site}, headers=reader)).json()["items"]
        journeys = (await api.get("/api/v1/journeys", params={"ref": marker}, headers=reader)).json()["items"]
        return items if items and journeys else None

    [cap] = await eventually(capacity)
    assert (cap["queue_length"], cap["counters_open"], cap["counters_busy"]) == (9, 4, 3)
    assert cap["utilisation"] == 0.75
    assert cap["est_wait_s"] is None  # no completed service in the window to estimate from


async def test_flow_history_gives_the_rate_minute_by_minute_for_the_last_hour(api, js, reader, token, uid):
    site = f"hist-{uid}"
    now = datetime.now(UTC)
    for n, ago in enumerate((3, 3, 40)):
        await publish(js, cloud_event("customer.arrived", f"queue:H{n}-{uid}", {"site": site},
                                      time=now - timedelta(minutes=ago)))
    await publish(js, cloud_event("service.completed", f"queue:H0-{uid}", {"site": site, "outcome": "served"},
                                  time=now - timedelta(minutes=1)))

    async def history():
        items = (await api.get("/api/v1/flow/history", params={"site": site}, headers=reader)).json()["items"]
        return items if items and items[0]["points"][-1]["completions_per_min"] else None

    [site_history] = await eventually(history)
    points = site_history["points"]
    assert site_history["site"] == site and len(points) == 60
    assert (points[-1]["arrivals_per_min"], points[-1]["completions_per_min"]) == (2 / 15, 1 / 15)
    assert points[0]["arrivals_per_min"] == 0  # 59 minutes ago nothing had arrived in the 15 before
    # the arrival 40 minutes ago, alone in its window
    assert 1 / 15 in [p["arrivals_per_min"] for p in points]
    other = await api.get("/api/v1/flow/history", params={"site": "elsewhere"},
                          headers={"Authorization": f"Bearer {token('manager', [site])}"})
    assert other.status_code == 403


async def test_health_readiness_metrics_and_openapi_are_public(api):
    assert (await api.get("/health")).json() == {"status": "ok"}
    ready = (await api.get("/ready")).json()
    assert ready == {"status": "ready", "postgres": True, "nats": True}
    metrics = (await api.get("/metrics")).text
    assert "switchboard_events_applied_total" in metrics
    schema = (await api.get("/schema/openapi.json")).json()
    operation_ids = {op["operationId"] for path in schema["paths"].values() for op in path.values()}
    assert {"listJourneys", "getJourney", "getFlow", "getCapacity", "listFailures",
            "postEvents"} <= operation_ids


async def test_a_journey_s_page_holds_its_newest_thousand_events_and_says_earlier_ones_are_left_out(
        api, js, pool, reader, uid):
    site, ticket = f"long-{uid}", f"queue:L-{uid}"
    start = datetime.now(UTC) - timedelta(days=1)
    await publish(js, cloud_event("customer.arrived", ticket, {"site": site}, time=start))

    async def made():
        page = (await api.get("/api/v1/journeys", params={"ref": ticket}, headers=reader)).json()
        return page["items"]

    [journey] = await eventually(made)
    # a connector's reminders, thousands of them: written straight to the log, as the apply would
    await pool.execute(
        "INSERT INTO events (source, id, type, subject, site, time, data, journey_id) SELECT '/queue',"
        " $1 || g, 'reminder.sent', $2, $3, $4::timestamptz + make_interval(secs => g), '{}', $5"
        " FROM generate_series(1, 1500) g", f"r-{uid}-", ticket, site, start, journey["id"])
    detail = (await api.get(f"/api/v1/journeys/{journey['id']}", headers=reader)).json()
    assert detail["earlier_events"] is True
    assert [e["id"] for e in detail["timeline"]] == [f"r-{uid}-{g}" for g in range(501, 1501)]
    await pool.execute("DELETE FROM events WHERE journey_id = $1 AND time < $2::timestamptz"
                       " + make_interval(secs => 501)", journey["id"], start)
    whole = (await api.get(f"/api/v1/journeys/{journey['id']}", headers=reader)).json()
    assert whole["earlier_events"] is False and len(whole["timeline"]) == 1000
