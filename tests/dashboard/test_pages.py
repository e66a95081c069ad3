"""Page logic with NiceGUI's simulated user, against a real backend fed through NATS."""

from __future__ import annotations

import msgspec
from nicegui import ui

from tests.conftest import BackendProcess, cloud_event, eventually, publish
from tests.dashboard.conftest import Board, simulated_board


async def test_signed_out_visitors_are_sent_to_sign_in(board: Board):
    await board.user.open("/capacity")
    await board.user.should_see("Sign in")
    await board.user.should_not_see("Capacity")


async def test_sign_in_refuses_what_is_not_a_usable_token_and_accepts_a_valid_one(board: Board, token):
    await board.user.open("/signin")
    board.user.find(ui.textarea).type("not a token")
    board.user.find("Sign in").click()
    await board.user.should_see("this is not a token", retries=50)
    board.user.find(ui.textarea).clear().type(token("connector", system="queue"))
    board.user.find("Sign in").click()
    await board.user.should_see("no role that may read the board", retries=50)
    await board.sign_in(token("manager"))
    await board.user.should_see("test-manager · manager · all sites")


async def test_demo_mode_mints_a_token_for_the_chosen_role_and_site(board: Board):
    await board.user.open("/signin")
    board.user.find("Enter").click()
    await board.user.should_see("demo-manager · manager · all sites", retries=100)


async def test_navigation_follows_the_role(board: Board, token):
    await board.sign_in(token("manager", ["north"]))
    await board.user.should_see("manager · north")
    await board.user.should_not_see("Audit")
    board.user.find("Sign out").click()
    await board.sign_in(token("sre"))
    await board.user.should_see("Audit")


async def test_a_journey_is_found_by_reference_with_its_timeline(board: Board, token, js, uid):
    site, ticket = f"site-{uid}", f"queue:T-{uid}"
    await publish(js, cloud_event("customer.arrived", ticket, {"site": site}))
    await publish(js, cloud_event("ticket.issued", ticket, {"site": site, "ticket": f"T-{uid}", "queue_name": "main"}))
    await board.sign_in(token("manager"))
    await board.user.open(f"/journeys?ref=queue:T-nobody-{uid}")
    await board.user.should_see(f"No journey has the reference queue:T-nobody-{uid}.")

    async def timeline_complete() -> bool:
        await board.user.open(f"/journeys?ref={ticket}")
        await board.user.should_see("Timeline")
        table = next(iter(board.user.find(ui.table).elements))
        return [row["type"] for row in table.rows] == ["customer.arrived", "ticket.issued"]

    assert await eventually(timeline_complete)
    await board.user.should_see("waiting")


async def test_capacity_cards_appear_live_and_a_site_over_target_stands_out(board: Board, token, js, uid):
    site = f"site-{uid}"
    await board.sign_in(token("manager"))
    await board.user.open("/capacity")
    await board.user.should_not_see(site)
    await publish(js, cloud_event("capacity.changed", f"site:{site}", {
        "site": site, "counters_open": 2, "counters_busy": 2, "staff_on_duty": 3, "queue_length": 7}, source="/queue"))
    await board.user.should_see(site, retries=100)
    await board.user.should_see("2 / 2")


async def test_a_failure_appears_live_and_its_actions_say_why_they_are_disabled(board: Board, token, js, uid):
    site = f"site-{uid}"
    await board.sign_in(token("manager"))
    await board.user.open("/failures")
    await board.user.should_see("Retry: needs the sre or admin role")
    await publish(js, cloud_event("customer.arrived", f"queue:T-{uid}", {"site": site, "email": "a@example.org"}))
    table = next(iter(board.user.find(ui.table).elements))

    async def listed() -> list[dict]:
        return [row for row in table.rows if row["site"] == site]

    [row] = await eventually(listed)
    assert row["kind"] == "pii_rejected" and row["status"] == "open"
    actions = {b.text: b.enabled for b in board.user.find(ui.button).elements}
    assert actions["Retry"] is actions["Retry all matching…"] is actions["Discard…"] is False


async def test_views_without_an_endpoint_say_so_honestly(board: Board, token):
    await board.sign_in(token("sre"))
    for path, title, endpoint in (("/integrations", "Integrations", "GET /api/v1/integrations"),
                                  ("/fallback", "Fallback", "GET /api/v1/fallbacks")):
        await board.user.open(path)
        await board.user.should_see(f"{title} is not available on this backend yet.")
        await board.user.should_see(f"The backend does not offer {endpoint} (checked against its OpenAPI document).")
    for path, title in (("/audit", "Audit"), ("/reconciliation", "Reconciliation")):  # this backend has these
        await board.user.open(path)
        await board.user.should_not_see(f"{title} is not available on this backend yet.")


async def test_every_page_says_when_the_live_connection_was_lost(own_backend: BackendProcess, settings, token):
    async with simulated_board(msgspec.structs.replace(settings, backend_url=own_backend.url)) as board:
        await board.sign_in(token("manager"))
        own_backend.stop()
        await board.user.should_see("Connection to the backend lost since", retries=100)
        for path in ("/capacity", "/failures"):
            await board.user.open(path)
            await board.user.should_see("Connection to the backend lost since", retries=50)
