"""Page logic with NiceGUI's simulated user, against a real backend fed through NATS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import cast

from nicegui import ui

from backend.live.sources import FAILURES_IN_SNAPSHOT
from dashboard.pages import commands, journeys
from dashboard.pages.failures import SHOWN
from tests.support.board import Board, simulated_board
from tests.support.connector_double import heartbeat
from tests.support.events import cloud_event, phone_booking, publish
from tests.support.settings import dashboard_settings
from tests.support.simulators import journey_of, running, still_queue, waiting
from tests.support.waits import eventually
from tools.backend_process import BackendProcess


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
    await publish(js, cloud_event("ticket.issued", ticket, {"site": site, "ticket": f"T-{uid}",
                                                             "queue_name": "main"}))
    await board.sign_in(token("manager"))
    await board.user.open(f"/journeys?ref=queue:T-nobody-{uid}")
    await board.user.should_see("No journey matches.")

    async def timeline_complete() -> bool:
        await board.user.open(f"/journeys?ref={ticket}")
        try:  # not found yet while the events wait to be applied (a loaded run met it): look again
            await board.user.should_see("Timeline")
        except AssertionError:
            return False
        table = next(iter(board.user.find(ui.table).elements))
        return [row["type"] for row in table.rows] == ["customer.arrived", "ticket.issued"]

    assert await eventually(timeline_complete)
    await board.user.should_see("waiting")


async def test_a_timeline_says_which_events_do_not_count_where_the_journey_sits(board: Board, token, js, uid):
    """A queue connector limited to north called a ticket the queue placed at south: kept, not counted."""
    north, south, ticket = f"north-{uid}", f"south-{uid}", f"queue:T-{uid}"
    now = datetime.now(UTC)
    issued = cloud_event("ticket.issued", ticket, {"site": south, "ticket": f"T-{uid}", "queue_name": "main"},
                         time=now - timedelta(minutes=1))
    await publish(js, issued, subject=f"svc.events.queue.ticket.issued.{south}")
    await publish(js, cloud_event("ticket.called", ticket, {"site": north, "counter": "C9"}, time=now),
                  subject=f"svc.events.queue.ticket.called.{north}")
    await board.sign_in(token("manager"))

    async def notes() -> dict[str, str] | None:
        await board.user.open(f"/journeys?ref={ticket}")
        try:  # not found yet while the events wait to be applied
            await board.user.should_see("Timeline")
        except AssertionError:
            return None
        table = next(iter(board.user.find(ui.table).elements))
        return {row["type"]: row["note"] for row in table.rows} if len(table.rows) == 2 else None

    assert await eventually(notes) == {"ticket.issued": "",
                                       "ticket.called": f"sent for {north} only: not counted at {south}"}
    await board.user.should_see("waiting")


async def test_capacity_cards_appear_live_and_a_site_over_target_stands_out(board: Board, token, js, uid):
    late, calm = f"late-{uid}", f"calm-{uid}"
    await board.sign_in(token("manager"))
    await board.user.open("/capacity")
    await board.user.should_not_see(late)
    now = datetime.now(UTC)
    # the wait is estimated from each site's service time: 30 minutes at one, 1 minute at the other
    for site, service in ((late, timedelta(minutes=30)), (calm, timedelta(minutes=1))):
        ticket = f"queue:T-{site}"
        await publish(js, cloud_event("service.started", ticket, {"site": site, "counter": "c1"},
                                      time=now - service))
        await publish(js, cloud_event("service.completed", ticket, {"site": site, "outcome": "DONE"},
                                      time=now))
    for site, busy, queue in ((late, 2, 7), (calm, 1, 1)):  # 7 × 30 min / 2 counters; 1 × 1 min / 2
        await publish(js, cloud_event("capacity.changed", f"site:{site}", {
            "site": site, "counters_open": 2, "counters_busy": busy, "staff_on_duty": 3,
            "queue_length": queue}, source="/queue"))
    await board.user.should_see(late, retries=100)
    await board.user.should_see(calm, retries=100)

    def stands_out(site: str) -> bool:
        [card] = [c for c in board.user.find(kind=ui.card).elements
                  if c.props.get("data-testid") == f"capacity-{site}"]
        badges = [e.text for e in card.descendants() if isinstance(e, ui.badge)]
        return "border-red-600" in card.classes and badges == ["over wait target"]

    async def late_stands_out() -> bool:  # its estimate (105 min) passes the 10 min target once applied
        return stands_out(late)

    await eventually(late_stands_out)
    assert not stands_out(calm)
    await board.user.should_see("2 / 2")
    await board.user.should_see("reported at")  # how old the figures are: the queue system may be down


async def test_a_failure_appears_live_and_its_actions_say_why_they_are_disabled(board: Board, token, js, uid):
    site = f"site-{uid}"
    await board.sign_in(token("manager"))
    await board.user.open("/failures")
    await board.user.should_see("Retry: needs the sre or admin role")
    await publish(js, cloud_event("customer.arrived", f"queue:T-{uid}",
                                  {"site": site, "email": "a@example.org"}))
    table = next(iter(board.user.find(ui.table).elements))

    async def listed() -> list[dict]:
        return [row for row in table.rows if row["site"] == site]

    [row] = await eventually(listed)
    assert row["kind"] == "pii_rejected" and row["status"] == "open"
    actions = {b.text: b.enabled for b in board.user.find(ui.button).elements}
    assert actions["Retry"] is actions["Retry all matching…"] is actions["Discard…"] is False


async def test_a_failure_holding_up_a_customer_in_the_building_comes_first_however_many_came_after(
        board: Board, token, js, pool, uid):
    """The live topic holds only the newest open failures: the most affecting are read from the backend."""
    site, ticket = f"site-{uid}", f"queue:T-{uid}"
    await publish(js, cloud_event("customer.arrived", ticket, {"site": site}))
    await eventually(lambda: pool.fetchval("SELECT count(*) FROM journeys WHERE site = $1", site))
    await publish(js, cloud_event("ticket.issued", ticket, {"site": site, "email": "a@example.org"}))
    for n in range(FAILURES_IN_SNAPSHOT):  # newer, of no journey
        await publish(js, cloud_event("customer.arrived", f"queue:U-{uid}-{n}",
                                      {"site": site, "email": "a@example.org"}))

    async def all_recorded() -> bool:
        return await pool.fetchval("SELECT count(*) FROM failures WHERE site = $1",
                                   site) == FAILURES_IN_SNAPSHOT + 1

    await eventually(all_recorded, timeout=30)
    holding_up = await pool.fetchval("SELECT id FROM failures WHERE site = $1 AND subject = $2", site, ticket)
    await board.sign_in(token("sre"))
    await board.user.open("/failures")
    site_filter = next(s for s in board.user.find(ui.select).elements if s.props.get("label") == "Site")
    await eventually(lambda: _offered(site_filter, site))
    site_filter.set_value(site)
    table = next(iter(board.user.find(ui.table).elements))

    async def first() -> dict | None:
        return table.rows[0] if table.rows and table.rows[0]["site"] == site else None

    row = await eventually(first)
    assert (row["id"], row["impact"]) == (holding_up, "arrived")
    assert len(table.rows) == SHOWN
    await board.user.should_see(f"The {SHOWN} open failures touching customers most are shown; more match")


async def _offered(select: ui.select, value: str) -> bool:
    return value in select.options


async def test_journeys_and_commands_are_read_a_page_at_a_time_older_then_newer(board: Board, token, js, pool,
                                                                                uid):
    site, count = f"pages-{uid}", max(journeys.PAGE, commands.PAGE) + 1
    for n in range(count):  # each booked by phone: a journey, and a visit.context command by the rule
        await publish(js, phone_booking(f"appointments:P{uid}x{n}", site))

    async def all_there() -> bool:
        counts = await pool.fetchrow("SELECT (SELECT count(*) FROM journeys WHERE site = $1) AS journeys,"
                                     " (SELECT count(*) FROM commands WHERE site = $1) AS commands", site)
        return counts["journeys"] == counts["commands"] == count

    await eventually(all_there, timeout=30)
    await board.sign_in(token("manager", [site]))
    for path, button, size in (("/journeys", "Search", journeys.PAGE), ("/commands", "Show", commands.PAGE)):
        await board.user.open(path)
        await board.user.should_see(button)
        next(i for i in board.user.find(ui.input).elements if i.props.get("label") == "Site").set_value(site)
        board.user.find(button).click()
        await _page_shows(board, 1, size)
        board.user.find("Older").click()
        await _page_shows(board, 2, count - size)
        board.user.find("Newer").click()
        await _page_shows(board, 1, size)


async def _page_shows(board: Board, number: int, journeys_linked: int) -> None:
    await board.user.should_see(f"Page {number}", retries=100)
    assert _journey_links(board) == journeys_linked


def _journey_links(board: Board) -> int:
    return sum(1 for link in board.user.find(ui.link).elements
               if str(link.props.get("href", "")).startswith("/journeys/"))


async def test_a_failure_refused_for_who_sent_it_cannot_be_retried_and_the_page_says_why(board: Board, token,
                                                                                         js, uid):
    site = f"site-{uid}"
    await board.sign_in(token("sre"))
    await board.user.open("/failures")
    # an event from /crm published on the queue's subject (by a connector limited to the site): a
    # source_mismatch, which only a discard ends
    await publish(js, cloud_event("customer.arrived", f"crm:C-{uid}", {"site": site}),
                  subject=f"svc.events.queue.customer.arrived.{site}")
    table = next(iter(board.user.find(ui.table).elements))

    async def listed() -> list[dict]:
        return [row for row in table.rows if row["site"] == site]

    [row] = await eventually(listed)
    assert row["kind"] == "source_mismatch"
    board.user.find(ui.table).trigger("selection", {"added": True, "rows": [row], "keys": [row["id"]]})
    buttons = {b.text: b for b in board.user.find(ui.button).elements}
    assert buttons["Retry"].enabled is False and buttons["Discard…"].enabled is True
    assert buttons["Retry"].props["title"] == "refused for who sent it: never retried, only discarded"
    await board.user.should_see("Retry: refused for who sent it: never retried, only discarded")
    board.user.find("Show payload").click()
    await board.user.should_see(f"Sent by a connector limited to {site}: a retry applies it for {site}"
                                " alone.")


async def test_retry_all_says_when_it_takes_only_the_oldest_of_the_matching_failures(board: Board, token,
                                                                                       pool, uid):
    site = f"site-{uid}"
    await pool.execute("INSERT INTO failures (dedupe_key, kind, site, reason, payload) SELECT $1 || g,"
                       " 'invalid_event', $2, 'a reason', '{}' FROM generate_series(1, 503) g",
                       f"board-bulk-{uid}-", site)
    await board.sign_in(token("sre", [site]))
    await board.user.open("/failures")
    board.user.find("Retry all matching…").click()
    await board.user.should_see("Retry the oldest 500 of 503 open failures matching the filter?")
    board.user.find("Retry 500").click()
    await board.user.should_see("Retry all: 500 still failing", retries=100)


async def test_resolve_all_says_when_it_plans_only_the_oldest_drift(board: Board, token, pool, uid):
    site = f"board-{uid}"
    run_id = await pool.fetchval("INSERT INTO reconciliation_runs (system, site, day, trigger) VALUES"
                                 " ('queue', $1, current_date, 'on_demand') RETURNING id", site)
    await pool.execute("INSERT INTO drift_items (dedupe_key, run_id, system, site, ref, kind) SELECT $1 || g,"
                       " $2, 'queue', $3, 'queue:D-' || g, 'missing_here' FROM generate_series(1, 503) g",
                       f"board-bulk-{uid}-", run_id, site)
    await board.sign_in(token("sre", [site]))
    await board.user.open("/reconciliation")
    await board.user.should_see("503 are open in all (resolving all matching reaches them, 500 at a time)")
    board.user.find("Resolve all matching…").click()
    await board.user.should_see("503 open drift items match; the oldest 500 are planned here;")


async def test_every_page_says_when_the_live_connection_was_lost(own_backend: BackendProcess, settings,
                                                                 token):
    async with simulated_board(dashboard_settings(settings.tokens, backend_url=own_backend.url)) as board:
        await board.sign_in(token("manager"))
        own_backend.stop()
        await board.user.should_see("Connection to the backend lost since", retries=100)
        for path in ("/capacity", "/failures"):
            await board.user.open(path)
            await board.user.should_see("Connection to the backend lost since", retries=50)


async def test_an_integration_tile_shows_the_health_a_heartbeat_reports(board: Board, token, js, pool, uid):
    connector = f"lab-board-{uid}"
    await board.sign_in(token("sre"))
    await board.user.open("/integrations")
    try:
        await publish(js, heartbeat("lab_board", connector, "degraded"))
        await board.user.should_see(f"connector {connector} reports its upstream degraded", retries=100)
        [badge] = [b for b in board.user.find(ui.badge).elements
                   if b.props.get("data-testid") == "status-lab_board"]
        assert badge.text == "degraded"
    finally:
        await pool.execute("DELETE FROM heartbeats WHERE connector = $1", connector)


async def test_drift_is_found_with_run_now_previewed_and_resolved_from_the_board(board: Board, api, settings,
                                                                                 token, workdir, uid):
    site = f"board-{uid}"
    queue = still_queue(site)
    async with running(settings, workdir / f"sim-{uid}", queue):
        ticket = await queue.arrive(site, "tax", [])
        sre = {"Authorization": f"Bearer {token('sre', [site])}"}
        await eventually(lambda: waiting(api, sre, ticket))
        queue.records[ticket].stage = "called"  # a counter called it; the queue told no one
        await board.sign_in(token("sre"))
        await board.user.open("/reconciliation")
        board.user.find(marker="run-site").type(site)
        board.user.find("Run now").click()
        await board.user.should_see(f"of queue at {site} started", retries=100)
        table = board.user.find(marker="drift-table")
        [drift_table] = cast("set[ui.table]", table.elements)

        async def stage_drift() -> dict | None:
            return next((r for r in drift_table.rows if r["ref"] == ticket and r["field"] == "stage"), None)

        row = await eventually(stage_drift)
        assert (row["ours"], row["theirs"], row["proposed_action"]) == ("waiting", "called", "accept_source")
        table.trigger("selection", {"added": True, "rows": [row], "keys": [row["id"]]})
        board.user.find("Preview and resolve…").click()
        await board.user.should_see(f"Will do: accept source on {ticket} · stage: waiting → called",
                                    retries=100)
        board.user.find(marker="confirm-resolve").click()
        await board.user.should_see(f"Drift #{row['id']}: repairing", retries=100)

        async def resolved() -> bool:
            item = (await api.get(f"/api/v1/reconciliation/drift/{row['id']}", headers=sre)).json()
            journey = await journey_of(api, sre, ticket)
            assert journey is not None
            return item["status"] == "resolved" and journey["stage"] == "called"

        assert await eventually(resolved, timeout=30)
