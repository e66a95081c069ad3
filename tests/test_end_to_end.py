"""Publish on NATS, read the journey through the API: the whole spine, with real servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx

from tests.support.events import cloud_event, publish
from tests.support.waits import eventually


async def test_events_on_nats_become_one_journey_readable_through_the_api(
        api: httpx.AsyncClient, js, token, uid):
    site = f"site-{uid}"
    appt, ticket = f"appointments:A-{uid}", f"queue:T-{uid}"
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    events = [
        cloud_event("appointment.booked", appt, {"site": site, "service": "passport", "channel": "phone",
                                                 "slot_start": (t0 + timedelta(hours=1)).isoformat()},
                    time=t0),
        cloud_event("customer.arrived", ticket, {"site": site, "links": [appt]},
                    time=t0 + timedelta(minutes=1)),
        cloud_event("ticket.issued", ticket, {"site": site, "ticket": f"T-{uid}", "queue_name": "main"},
                    time=t0 + timedelta(minutes=2)),
        cloud_event("ticket.called", ticket, {"site": site, "counter": "C3"}, time=t0 + timedelta(minutes=4)),
    ]
    for event in events:
        await publish(js, event)
    headers = {"Authorization": f"Bearer {token('manager', [site])}"}

    async def journey_called():
        page = (await api.get("/api/v1/journeys", params={"ref": ticket}, headers=headers)).json()
        return page["items"] if page["items"] and page["items"][0]["stage"] == "called" else None

    [journey] = await eventually(journey_called)
    assert journey["site"] == site
    assert sorted(journey["refs"]) == sorted([appt, ticket])
    assert (journey["service"], journey["counter"], journey["ticket"]) == ("passport", "C3", f"T-{uid}")

    detail = (await api.get(f"/api/v1/journeys/{journey['id']}", headers=headers)).json()
    assert [e["type"] for e in detail["timeline"]] == [e["type"] for e in events]
    assert [e["id"] for e in detail["timeline"]] == [e["id"] for e in events]

    flow = (await api.get("/api/v1/flow", params={"site": site}, headers=headers)).json()["items"]
    assert flow[0]["stages"] == {"called": 1}
    assert flow[0]["wait_p50_s"] == 120.0  # called 2 minutes after the ticket was issued
