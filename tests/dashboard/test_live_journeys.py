"""The dashboard's live state (dashboard/live.py) on the real backend's websocket: what the board holds of
journeys as links join them."""

from __future__ import annotations

from typing import Any

from dashboard.live import LiveConnection
from tests.support.events import cloud_event, publish
from tests.support.waits import eventually


async def test_a_journey_a_link_joins_into_another_leaves_the_board_and_the_survivor_has_both_references(
        backend, js, token, uid):
    site, appointment, ticket = f"board-join-{uid}", f"appointments:A-{uid}", f"queue:T-{uid}"
    connection = LiveConnection(backend.url, token("manager", [site]), topics=("journeys",))
    connection.start()
    try:
        await publish(js, cloud_event("appointment.booked", appointment,
                                      {"site": site, "service": "passport", "channel": "web",
                                       "slot_start": "2026-12-05T09:00:00+00:00"}))
        await publish(js, cloud_event("customer.arrived", ticket, {"site": site}))

        async def both_shown() -> dict[str, Any] | None:
            by_ref = {j["refs"][0]: j for j in connection.state.items["journeys"].values()}
            return by_ref if {appointment, ticket} <= by_ref.keys() else None

        shown = await eventually(both_shown)
        booked, arrived = shown[appointment]["id"], shown[ticket]["id"]
        link = {"site": site, "ticket": "T-1", "queue_name": "main", "links": [appointment]}
        await publish(js, cloud_event("ticket.issued", ticket, link))

        async def joined() -> bool:
            journeys = connection.state.items["journeys"]
            return arrived not in journeys and journeys[booked]["refs"] == sorted([appointment, ticket])

        await eventually(joined)
        assert arrived not in {j["id"] for _, j in connection.state.latest_journeys}
        assert booked in {j["id"] for _, j in connection.state.latest_journeys}
    finally:
        await connection.stop()
