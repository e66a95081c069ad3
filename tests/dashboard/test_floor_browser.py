"""The Floor page and the per-system Fallback page in a real headless Chromium, on a backend of this
module's own with a sites file (site-local times in a zone no one mistakes for UTC), with the simulated
queue carrying out what the page asks."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import cast
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.async_api import Browser, Page, ViewportSize, expect

from backend.live.sources import JOURNEYS_IN_SNAPSHOT
from connectors.sim.queue import Queue
from dashboard.pages.fallback import LEDGER_SHOWN
from tests.support import fallbacks
from tests.support.backends import Stack, own_stack
from tests.support.browser import DOC_SCREENSHOTS, document, running_dashboard, sign_in_as, target_size
from tests.support.events import phone_booking, publish
from tests.support.failures import bearer
from tests.support.floor import customer, letters, sites_file
from tests.support.simulators import journey_of, running, still_queue, waiting
from tests.support.waits import Check, eventually

pytestmark = pytest.mark.slow

ZONE = "Asia/Kathmandu"  # +05:45: a time shown in it is never UTC or any whole-hour zone by accident
ZONE_MARK = "+0545"
COUNTERS = ["C1", "C2", "C3"]
TABLETS: dict[str, ViewportSize] = {"landscape": {"width": 1024, "height": 768},
                                    "portrait": {"width": 768, "height": 1024}}
SITES = {orientation: f"floor-{orientation}-{letters()}" for orientation in TABLETS}
FALLBACK_SITE, SYSTEMS_SITE = f"floor-fallback-{letters()}", f"floor-systems-{letters()}"
UNLISTED_SITE = f"floor-unlisted-{letters()}"  # not in the sites file: no counters configured
BOOKINGS_SITE = f"floor-bookings-{letters()}"
LEDGER_SITE = f"floor-ledger-{letters()}"  # a fallback with more steps than the ledger table holds
NEXT_SITE = f"floor-next-{letters()}"  # a waiting customer behind more journeys than the live snapshot holds


@pytest.fixture(scope="module")
async def stack(server_urls: dict[str, str],
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    folder = tmp_path_factory.mktemp("floor-board")
    path = sites_file(folder, {site: {"time_zone": ZONE, "counters": COUNTERS}
                               for site in (*SITES.values(), FALLBACK_SITE, SYSTEMS_SITE, BOOKINGS_SITE,
                                                NEXT_SITE, LEDGER_SITE)})
    async with own_stack(server_urls["database_url"], folder, {"SWITCHBOARD_SITES_FILE": str(path)}) as stack:
        yield stack


@pytest.fixture(scope="module")
def floor_board(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_dashboard(stack.backend, stack.settings,
                           tmp_path_factory.mktemp("floor-dashboard") / "dashboard.log") as url:
        yield url


@pytest.fixture
async def fapi(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.backend.url, timeout=15) as client:
        yield client


async def floor_page(browser: Browser, url: str, site: str, viewport: ViewportSize) -> Page:
    page = await browser.new_page(viewport=viewport)
    await sign_in_as(page, url, "floor_staff", sites=site)
    await page.goto(url + "/floor")
    await expect(page.get_by_test_id("my-counter")).to_have_value("C1", timeout=15_000)
    return page


async def staff_page(browser: Browser, url: str, site: str, path: str) -> Page:
    """A landscape tablet signed in as floor staff of `site`, on `path`."""
    page = await browser.new_page(viewport=TABLETS["landscape"])
    await sign_in_as(page, url, "floor_staff", sites=site)
    await page.goto(url + path)
    return page


async def choose_counter(page: Page, counter: str) -> None:
    await page.get_by_test_id("my-counter").click()
    await page.get_by_role("option", name=counter, exact=True).click()
    await expect(page.get_by_test_id(f"counter-{counter}")).to_contain_text("(mine)")


async def type_counter(page: Page, name: str) -> None:
    """Type a counter into "My counter", in place of whatever the field held."""
    await page.get_by_test_id("my-counter").click()
    await page.keyboard.press("Control+A")
    await page.keyboard.type(name)
    await page.keyboard.press("Enter")


async def called_at(queue: Queue, ref: str, counter: str) -> bool:
    record = queue.records[ref]
    return record.stage == "called" and record.fields.get("counter") == counter


async def test_at_a_site_without_configured_counters_staff_type_their_counter_and_call(
        browser: Browser, floor_board, stack, fapi, token, tmp_path):
    """No counter is listed (none configured, none in use yet): the counter is typed, and calling works."""
    site = UNLISTED_SITE
    queue = still_queue(site)
    async with running(stack.settings, tmp_path, queue):
        ref = await queue.arrive(site, "tax", [])
        await eventually(cast(Check, lambda: waiting(fapi, bearer(token, "sre", [site]), ref)))
        page = await staff_page(browser, floor_board, site, "/floor")
        ticket = ref.split(":", 1)[1]
        await expect(page.get_by_test_id(f"call-{ticket}")).to_be_disabled(timeout=15_000)  # no counter yet
        await type_counter(page, "D7")
        await page.get_by_role("button", name=f"Call {ticket} to counter D7").click()
        assert await eventually(lambda: called_at(queue, ref, "D7"))

        # a colleague on another tablet: D7 (in use) is offered, never chosen for them; what they type stays
        later = await queue.arrive(site, "tax", [])
        await eventually(cast(Check, lambda: waiting(fapi, bearer(token, "sre", [site]), later)))
        context = await browser.new_context(viewport=TABLETS["portrait"])
        colleague = await context.new_page()
        await sign_in_as(colleague, floor_board, "floor_staff", sites=site)
        await colleague.goto(floor_board + "/floor")
        later_ticket = later.split(":", 1)[1]
        await expect(colleague.get_by_test_id(f"call-{later_ticket}")).to_be_disabled(timeout=15_000)
        # a name that would add a prop of its own to the call buttons' label is refused, and runs nothing
        await type_counter(colleague, "1' :loading='window.pwned = 1'")
        await expect(colleague.get_by_test_id("floor-outcome")).to_contain_text("A counter's name is")
        await expect(colleague.get_by_test_id(f"call-{later_ticket}")).to_be_disabled()
        await type_counter(colleague, "E2")
        await colleague.get_by_role("button", name=f"Call {later_ticket} to counter E2").click()
        assert await eventually(lambda: called_at(queue, later, "E2"))
        await expect(colleague.get_by_test_id("my-counter")).to_have_value("E2")
        assert await colleague.evaluate("window.pwned") is None
        await context.close()
        await page.close()


@pytest.mark.parametrize("orientation", list(TABLETS))
async def test_floor_at_tablet_size_calls_a_customer_to_my_counter_in_the_queue_and_updates_live(
        browser: Browser, floor_board, stack, fapi, token, tmp_path, orientation):
    site, viewport = SITES[orientation], TABLETS[orientation]
    sre = bearer(token, "sre", [site])
    queue = still_queue(site)
    async with running(stack.settings, tmp_path, queue):
        first, second, third = [await queue.arrive(site, "tax", []) for _ in range(3)]
        for ref in (first, second, third):
            await eventually(cast(Check, lambda ref=ref: waiting(fapi, sre, ref)))
        arrived = (await customer(fapi, sre, site, first))["arrived_at"]  # type: ignore[index]
        page = await floor_page(browser, floor_board, site, viewport)
        ticket, other = first.split(":", 1)[1], second.split(":", 1)[1]
        row = page.get_by_test_id(f"customer-{ticket}")
        await expect(row).to_contain_text(f"arrived {_local(arrived)} {ZONE_MARK}")
        await expect(page.get_by_test_id(f"customer-{other}")).to_be_visible()
        journey = await waiting(fapi, sre, first)
        await expect(row.get_by_role("link", name=ticket)).to_have_attribute(  # the customer's Journey page
            "href", f"/journeys/{journey['id']}")  # type: ignore[index]

        await choose_counter(page, "C2")
        call = row.get_by_role("button", name=f"Call {ticket} to counter C2")
        width, height = await target_size(call)
        assert height >= 48 and width >= 48, (width, height)  # a finger's target
        await call.click()
        # the backend answers "sent", or "done" when the queue system answered within its wait; the status
        # line may pass "sent" before a poll sees it, the toast keeps the answer
        answered = re.compile(rf"Call {re.escape(ticket)}: (sent|done by the queue system)")
        await expect(page.locator(".q-notification").filter(has_text=answered)).to_be_visible()
        await expect(page.get_by_test_id("floor-outcome")).to_have_text(
            re.compile(rf"^Call {re.escape(ticket)}: done( by the queue system)?$"), timeout=15_000)

        async def called_at_c2() -> bool:
            record = queue.records[first]
            return record.stage == "called" and record.fields.get("counter") == "C2"

        assert await eventually(called_at_c2)
        await expect(page.get_by_test_id("counter-C2")).to_contain_text(f"{ticket} · called", timeout=15_000)
        await expect(row).to_be_hidden()  # it left the waiting list, live
        DOC_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=DOC_SCREENSHOTS / f"floor-{orientation}.png", full_page=True)

        # the keyboard alone calls the next one: focus the button and press Enter
        await choose_counter(page, "C3")
        await page.get_by_test_id("call-next").focus()
        await page.keyboard.press("Enter")
        await expect(page.get_by_test_id("counter-C3")).to_contain_text(f"{other} · called", timeout=15_000)
        assert queue.records[second].fields.get("counter") == "C3"

        # narrow or not, the navigation is one tap away in the drawer
        await expect(page.get_by_role("navigation").filter(has_text="Fallback").last).to_be_hidden()
        await page.get_by_test_id("menu").click()
        await page.get_by_role("navigation").get_by_role("link", name="Fallback").click()
        await expect(page).to_have_url(f"{floor_board}/fallback")
        await page.goto(floor_board + "/floor")
        await expect(page.get_by_test_id("counter-C3")).to_contain_text(f"{other} · called", timeout=15_000)
        await page.close()


def _local(at: str) -> str:
    return datetime.fromisoformat(at).astimezone(ZoneInfo(ZONE)).strftime("%H:%M")


async def test_floor_during_the_queue_fallback_shows_a_banner_and_a_call_is_a_manual_step(
        browser: Browser, floor_board, stack, fapi, token):
    site = FALLBACK_SITE
    staff = bearer(token, "floor_staff", [site])
    fallback = (await fallbacks.start(fapi, staff, site)).json()
    arrived = await fallbacks.act(fapi, staff, fallback["id"], action="check_in")
    ref = arrived.json()["ref"]
    issued = (await fallbacks.act(fapi, staff, fallback["id"], action="issue_ticket", ref=ref)).json()
    page = await floor_page(browser, floor_board, site, TABLETS["landscape"])
    banner = page.get_by_test_id("fallback-banner")
    await expect(banner).to_contain_text("Queue system in fallback since")
    await expect(banner).to_contain_text(f"recorded by hand in fallback #{fallback['id']}")
    ticket = issued["ticket"]
    await page.get_by_role("button", name=f"Call {ticket} to counter C1").click()
    toast = page.locator(".q-notification").filter(has_text=f"Call {ticket}: ").filter(has_text="by hand")
    await expect(toast).to_be_visible()  # said even when a live update redrew the button meanwhile
    await expect(page.get_by_test_id("floor-outcome")).to_have_text(f"Call {ticket}: done (recorded by hand)",
                                                                      timeout=15_000)  # by hand, still said
    await expect(page.get_by_test_id("counter-C1")).to_contain_text(f"{ticket} · called", timeout=15_000)
    ledger = await stack.pool.fetch("SELECT action, step_id, data FROM fallback_ledger WHERE fallback_id = $1"
                                    " ORDER BY seq", fallback["id"])
    assert [r["action"] for r in ledger] == ["check_in", "issue_ticket", "call"]
    assert ledger[2]["step_id"]  # the page chose it: a repeat would be done once
    await document(page, "floor-fallback.png")
    await page.close()


async def test_fallback_steps_on_the_next_one_apply_to_whoever_waits_longest_however_many_journeys_came_after(
        browser: Browser, floor_board, stack, fapi, token):
    """The live snapshot holds the newest journeys only; whom "Call next" calls is read from the floor."""
    site = NEXT_SITE
    staff = bearer(token, "floor_staff", [site])
    fallback = (await fallbacks.start(fapi, staff, site)).json()
    walk_in = (await fallbacks.acted(fapi, staff, fallback["id"], action="check_in"))["ref"]
    issued = await fallbacks.acted(fapi, staff, fallback["id"], action="issue_ticket", ref=walk_in)
    ticket = issued["ticket"]
    for n in range(JOURNEYS_IN_SNAPSHOT):  # booked for later today: newer journeys, none on the floor
        await publish(stack.js, phone_booking(f"appointments:N-{letters()}-{n}", site))

    async def booked() -> bool:
        return await stack.pool.fetchval("SELECT count(*) FROM journeys WHERE site = $1 AND stage = 'booked'",
                                         site) == JOURNEYS_IN_SNAPSHOT

    await eventually(booked, timeout=30)
    page = await staff_page(browser, floor_board, site, "/fallback")
    await expect(page.get_by_test_id("next-call")).to_have_text(ticket, timeout=15_000)
    await page.get_by_test_id("step-call").click()
    await expect(page.get_by_test_id("outcome")).to_contain_text("Call next done: ", timeout=15_000)

    async def called() -> bool:
        found = await customer(fapi, staff, site, walk_in)
        return found is not None and found["stage"] == "called"

    await eventually(called)
    await expect(page.get_by_test_id("next-call")).to_have_text("no one waiting", timeout=15_000)
    await page.close()


async def test_the_ledger_table_holds_the_newest_steps_of_a_long_fallback_and_says_how_many_there_are(
        browser: Browser, floor_board, stack, fapi, token):
    site = LEDGER_SITE
    staff = bearer(token, "floor_staff", [site])
    fallback = (await fallbacks.start(fapi, staff, site)).json()
    for _ in range(LEDGER_SHOWN + 1):
        await fallbacks.acted(fapi, staff, fallback["id"], action="check_in")
    page = await staff_page(browser, floor_board, site, "/fallback")
    steps = page.get_by_test_id("ledger").locator("tbody tr td:nth-child(1)")
    for size in (LEDGER_SHOWN + 1, LEDGER_SHOWN + 2):
        title = page.get_by_text(f"the last {LEDGER_SHOWN} of {size} steps taken by hand")
        await expect(title).to_be_visible(timeout=15_000)
        await expect(steps.last).to_have_text(str(size), timeout=15_000)
        await expect(steps).to_have_count(LEDGER_SHOWN)
        await expect(steps.first).to_have_text(str(size - LEDGER_SHOWN + 1))
        await fallbacks.acted(fapi, staff, fallback["id"], action="check_in")  # one more, live
    await page.close()


async def test_fallback_page_shows_only_the_steps_of_the_system_down_and_the_ledger_of_that_fallback(
        browser: Browser, floor_board, stack, fapi, token):
    site = SYSTEMS_SITE
    staff = bearer(token, "floor_staff", [site])
    queue_fallback = (await fallbacks.start(fapi, staff, site)).json()
    walk_in = (await fallbacks.acted(fapi, staff, queue_fallback["id"], action="check_in"))["ref"]
    page = await staff_page(browser, floor_board, site, "/fallback")
    await expect(page.get_by_test_id("step-check_in")).to_be_visible(timeout=15_000)
    await expect(page.get_by_test_id("step-set_priority")).to_have_count(0)
    await expect(page.get_by_test_id("ledger")).to_contain_text("check in")
    checked_in = await eventually(lambda: journey_of(fapi, staff, walk_in))
    await expect(page.get_by_test_id("ledger").get_by_test_id("journey-link")).to_have_attribute(
        "href", f"/journeys/{checked_in['id']}")
    # the queue's steps on "the next one": ticket for the walk-in, then a call to a counter of the site's
    await expect(page.get_by_test_id("input-counter")).to_contain_text("C1")
    await page.get_by_test_id("step-issue_ticket").click()
    await expect(page.get_by_test_id("outcome")).to_contain_text(f"Issue ticket done: ticket M-001 {walk_in}",
                                                                 timeout=15_000)
    await expect(page.get_by_test_id("steps")).to_contain_text("M-001")  # next to call: the walk-in's ticket
    await page.get_by_test_id("step-call").click()
    await expect(page.get_by_test_id("outcome")).to_contain_text("Call next done: ", timeout=15_000)
    await expect(page.get_by_test_id("outcome")).to_contain_text(" is called")
    assert await stack.pool.fetchval("SELECT data->>'counter' FROM fallback_ledger WHERE fallback_id = $1 AND"
                                     " action = 'call'", queue_fallback["id"]) == "C1"
    # read as the steps come, only the steps it lacks: each once, in order
    await expect(page.get_by_test_id("ledger").locator("tbody tr td:nth-child(3)")).to_have_text(
        ["check in", "issue ticket", "call"], timeout=15_000)

    # crm goes down too; staff switch to it: only its step, and its own (empty, then growing) ledger
    crm = page.get_by_test_id("system-crm")
    await crm.get_by_role("button", name="Start fallback…").click()
    await page.get_by_test_id("reason").fill("crm unreachable")
    await page.get_by_role("button", name="Confirm").click()
    await expect(crm).to_contain_text("FALLBACK since", timeout=15_000)
    await expect(crm).to_contain_text(ZONE_MARK)
    # still working on the queue's fallback: its steps and its ledger, not the later fallback's
    await expect(page.get_by_test_id("step-check_in")).to_be_visible()
    await expect(page.get_by_test_id("ledger")).to_contain_text("check in")
    await expect(page.get_by_test_id("working-on")).to_contain_text("queue · 3 steps")
    await page.get_by_test_id("working-on").get_by_text("crm").click()
    await expect(page.get_by_test_id("step-set_priority")).to_be_visible()
    await expect(page.get_by_test_id("step-check_in")).to_have_count(0)
    await expect(page.get_by_test_id("ledger")).not_to_contain_text("check in")
    await page.get_by_test_id("step-ref").fill(walk_in)
    await page.get_by_test_id("step-set_priority").click()
    await expect(page.get_by_test_id("outcome")).to_contain_text("Set priority done", timeout=15_000)
    await expect(page.get_by_test_id("ledger")).to_contain_text("set priority", timeout=15_000)
    await expect(page.get_by_test_id("ledger")).to_contain_text(ZONE_MARK)
    # a step on the queue meanwhile (the later fallback) does not take the ledger over, once the page has it
    await fallbacks.acted(fapi, staff, queue_fallback["id"], action="check_in")
    await expect(page.get_by_test_id("working-on")).to_contain_text("queue · 4 steps", timeout=15_000)
    await expect(page.get_by_test_id("ledger")).not_to_contain_text("check in")
    await document(page, "fallback.png")
    await page.close()


async def test_fallback_of_appointments_lists_todays_bookings_and_checks_one_in_with_a_tap(
        browser: Browser, floor_board, stack, fapi, token):
    site = BOOKINGS_SITE
    staff = bearer(token, "floor_staff", [site])
    fallback = (await fallbacks.start(fapi, staff, site, system="appointments",
                                      reason="bookings down")).json()
    booked = [(await fallbacks.acted(fapi, staff, fallback["id"], action="book_walk_in",
                                     service=service))["ref"] for service in ("passport", "tax")]
    page = await browser.new_page(viewport=TABLETS["portrait"])
    await sign_in_as(page, floor_board, "floor_staff", sites=site)
    await page.goto(floor_board + "/fallback")
    bookings = page.get_by_test_id("bookings")
    for ref in booked:
        await expect(bookings).to_contain_text(ref, timeout=15_000)
    await expect(bookings).to_contain_text(ZONE_MARK)  # slots in the site's own time
    await expect(page.get_by_test_id("step-set_priority")).to_have_count(0)
    first = page.get_by_role("button", name=f"Check in {booked[0]}")
    _, height = await target_size(first)
    assert height >= 44, height  # a touch-sized target
    await first.click()
    await expect(page.get_by_test_id("outcome")).to_contain_text(
        f"Check in appointment done: {booked[0]} is arrived", timeout=15_000)
    await expect(bookings).not_to_contain_text(booked[0])
    await expect(bookings).to_contain_text(booked[1])
    await expect(page.get_by_test_id("ledger")).to_contain_text("check in", timeout=15_000)
    journey = await journey_of(fapi, staff, booked[0])
    assert journey is not None and journey["stage"] == "arrived"
    await document(page, "fallback-appointments.png")
    await page.close()
    # a manager of the site watches the same fallback: the bookings, but no check-in to press
    manager = await browser.new_page(viewport=TABLETS["portrait"])
    await sign_in_as(manager, floor_board, "manager", sites=site)
    await manager.goto(floor_board + "/fallback")
    await expect(manager.get_by_test_id("bookings")).to_contain_text(booked[1], timeout=15_000)
    await expect(manager.get_by_role("button", name=f"Check in {booked[1]}")).to_be_disabled()
    await manager.close()
