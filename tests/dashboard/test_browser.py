"""End to end in a real headless Chromium (Debian's `chromium`): a running backend, a running
`switchboard dashboard`, events published on NATS. Every page is saved as a screenshot under
artifacts/screenshots/."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.async_api import Browser, expect

from backend.reports.services import roll_up_recent
from backend.sites.config import load_sites
from tests.support.browser import SCREENSHOTS, sign_in_as
from tests.support.database import refusing_site
from tests.support.events import cloud_event, phone_booking, publish
from tests.support.simulators import journey_of
from tests.support.waits import eventually

pytestmark = pytest.mark.slow


async def test_a_count_on_the_board_changes_after_an_event_is_published(browser: Browser, dashboard_url,
                                                                        js, uid):
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    # a manager of this test's own site: other tests' arrivals elsewhere never move the count
    await sign_in_as(page, dashboard_url, "manager", sites=f"site-{uid}")
    arrived = page.get_by_test_id("count-arrived")
    await expect(page.get_by_test_id("banner")).to_be_hidden()
    await expect(arrived).to_have_text("0")
    await publish(js, cloud_event("customer.arrived", f"queue:T-{uid}", {"site": f"site-{uid}"}))
    await expect(arrived).to_have_text("1", timeout=15_000)
    await page.close()


async def test_every_page_renders_for_an_sre_and_is_saved_as_a_screenshot(browser: Browser, dashboard_url,
                                                                          board_routes, js, uid, api, token):
    pages = [route for route in board_routes if route != "/signin"]  # every page the dashboard registers
    site = f"site-{uid}"
    await publish(js, cloud_event("capacity.changed", f"site:{site}", {
        "site": site, "counters_open": 3, "counters_busy": 2, "staff_on_duty": 4, "queue_length": 5},
        source="/queue"))
    await publish(js, cloud_event("ticket.issued", f"queue:T-{uid}", {"site": site, "ticket": f"T-{uid}",
                                                                      "queue_name": "main"}))
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await sign_in_as(page, dashboard_url, "sre")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    started = time.time() - 1  # the file system's clock may round a modification time down
    journey = await eventually(lambda: journey_of(api, {"Authorization": f"Bearer {token('sre')}"},
                                                  f"queue:T-{uid}"))
    opened = {"/journeys": f"/journeys?ref=queue:T-{uid}",
              "/journeys/{journey_id}": f"/journeys/{journey['id']}"}
    shot = {"/journeys/{journey_id}": "journey"}
    for path in pages:
        await page.goto(dashboard_url + opened.get(path, path))
        await expect(page.get_by_test_id("who")).to_contain_text("demo-sre")
        if path == "/capacity":
            await expect(page.get_by_test_id(f"capacity-{site}")).to_contain_text("3 / 2")
        if path == "/journeys":
            await expect(page.get_by_test_id("timeline")).to_contain_text("ticket.issued")
        await page.wait_for_timeout(500)  # let plotly finish drawing before the picture
        picture = shot.get(path, path.strip("/") or "flow")
        await page.screenshot(path=SCREENSHOTS / f"{picture}.png", full_page=True)
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_test_id("demo-enter")).to_be_visible()
    await page.screenshot(path=SCREENSHOTS / "signin.png")
    assert errors == []
    shots = {f"{shot.get(p, p.strip('/') or 'flow')}.png" for p in pages}
    written = {p.name for p in SCREENSHOTS.glob("*.png") if p.stat().st_mtime >= started}
    assert written >= shots | {"signin.png"}
    await page.close()


async def test_a_page_waits_for_a_slow_backend_instead_of_failing(browser: Browser, dashboard_url, pool):
    """A page asks the backend for the viewer's sites before it is sent; in an incident that can take longer
    than NiceGUI's default 3 s, after which it answered with its own error page instead of the board."""
    page = await browser.new_page()
    await sign_in_as(page, dashboard_url, "sre")
    async with pool.acquire() as conn:
        async with conn.transaction():
            await conn.execute("LOCK TABLE journeys IN ACCESS EXCLUSIVE MODE")  # the sites list waits
            opening = asyncio.create_task(page.goto(dashboard_url + "/capacity"))
            await asyncio.sleep(5)  # the condition itself: a backend slower than the default allows
        response = await opening
    assert response is not None and response.status == 200
    await expect(page.get_by_test_id("who")).to_contain_text("demo-sre")
    await page.close()


async def test_retry_on_a_failure_resolves_it_once_its_cause_is_fixed(browser: Browser, dashboard_url,
                                                                      js, pool, uid):
    site = f"poison-{uid}"
    async with refusing_site(pool, site):  # the event becomes an apply_error until the cause is fixed
        await publish(js, cloud_event("customer.arrived", f"queue:P-{uid}", {"site": site}))
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        await sign_in_as(page, dashboard_url, "sre")
        await page.goto(dashboard_url + "/failures")
        row = page.locator("tr", has_text=site)
        await expect(row).to_be_visible(timeout=15_000)
        await expect(row).to_contain_text(" UTC")  # its last time in the site's zone, which says its name
    await row.locator(".q-checkbox").click()
    await page.get_by_role("button", name="Retry", exact=True).click()
    await expect(page.get_by_test_id("outcome")).to_contain_text("resolved", timeout=15_000)
    await expect(row).to_be_hidden(timeout=15_000)  # resolved: it leaves the open failures, live
    assert await pool.fetchval("SELECT status FROM failures WHERE site = $1", site) == "resolved"
    assert await pool.fetchval("SELECT count(*) FROM journeys WHERE site = $1", site) == 1
    await page.close()


async def test_floor_staff_start_a_fallback_and_check_a_customer_in_by_hand(browser: Browser, dashboard_url,
                                                                          pool, uid):
    site = f"floor-{uid}"
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    await sign_in_as(page, dashboard_url, "floor_staff", sites=site)
    await page.goto(dashboard_url + "/fallback")
    queue = page.get_by_test_id("system-queue")
    await queue.get_by_role("button", name="Start fallback…").click()
    await page.get_by_test_id("reason").fill("queue system down")
    await page.get_by_role("button", name="Confirm").click()
    await expect(queue).to_contain_text("FALLBACK since", timeout=15_000)
    await page.get_by_test_id("step-check_in").click()
    await expect(page.get_by_test_id("outcome")).to_contain_text("Check in done", timeout=15_000)
    await expect(page.get_by_test_id("outcome")).to_contain_text("is arrived")
    await expect(page.locator("tr", has_text="check in")).to_be_visible(timeout=15_000)  # the ledger, live
    await page.screenshot(path=SCREENSHOTS / "fallback-active.png", full_page=True)
    journey = await pool.fetchrow("SELECT j.stage, e.source FROM journeys j"
                                  " JOIN events e ON e.journey_id = j.id WHERE j.site = $1", site)
    assert (journey["stage"], journey["source"]) == ("arrived", "/manual/demo-floor_staff")
    assert await pool.fetchval("SELECT count(*) FROM fallback_ledger l"
                               " JOIN fallbacks f ON f.id = l.fallback_id"
                               " WHERE f.site = $1 AND l.action = 'check_in'", site) == 1
    await page.close()


async def test_an_alert_is_a_banner_on_every_page_of_its_site_acknowledged_and_resolved_by_itself(
        browser: Browser, dashboard_url, js, pool, uid):
    site = f"alert-{uid}"
    # someone has waited 30 minutes at a site whose target is 10: over it for 20, past the rule's 10 minutes
    await publish(js, cloud_event("customer.arrived", f"queue:W-{uid}", {"site": site},
                                  time=datetime.now(UTC) - timedelta(minutes=30)))
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    await sign_in_as(page, dashboard_url, "manager", sites=site)
    banner = page.get_by_test_id("alerts-banner")
    await expect(banner).to_contain_text(f"Site {site}: a wait of", timeout=15_000)
    for path in ("/capacity", "/failures", "/reports"):
        await page.goto(dashboard_url + path)
        await expect(banner).to_contain_text(f"Site {site}", timeout=15_000)
    alert_id = await pool.fetchval("SELECT id FROM alerts WHERE subject = $1 AND status = 'open'", site)
    await page.goto(dashboard_url + "/alerts")
    card = page.get_by_test_id(f"active-{alert_id}")
    await expect(card).to_contain_text("wait-over-target")
    rule = page.get_by_test_id("rules").locator("tr", has_text="wait-over-target")
    await expect(rule).to_contain_text("wait over target")
    await expect(rule).to_contain_text("for minutes 10")
    await page.get_by_test_id(f"ack-{alert_id}").click()
    await expect(card).to_contain_text("acknowledged by demo-manager", timeout=15_000)
    await expect(banner).to_contain_text("acknowledged by demo-manager", timeout=15_000)
    await expect(page.get_by_test_id("alert-history")).to_contain_text("acknowledged", timeout=15_000)
    await page.wait_for_timeout(500)
    await page.screenshot(path=SCREENSHOTS / "alerts.png", full_page=True)
    assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE target = $1 AND action = 'alert.ack'",
                               f"alert:{alert_id}") == 1

    # a reader of another site sees no banner for it, and a floor worker of the site cannot acknowledge
    other = await browser.new_page(viewport={"width": 1400, "height": 1000})
    await sign_in_as(other, dashboard_url, "floor_staff", sites=f"elsewhere-{uid}")
    await other.goto(dashboard_url + "/alerts")
    await expect(other.get_by_test_id(f"active-{alert_id}")).to_have_count(0)
    await expect(other.get_by_test_id("alerts-banner")).not_to_contain_text(site)
    await other.close()

    # called at last: nobody waits past the target, the alert resolves itself and the banner goes
    await publish(js, cloud_event("ticket.called", f"queue:W-{uid}", {"site": site, "counter": "3"}))
    await expect(card).to_have_count(0, timeout=15_000)
    await expect(banner).to_be_hidden(timeout=15_000)
    await page.reload()
    history_row = page.get_by_test_id("alert-history").locator("tr", has_text=site)
    await expect(history_row).to_contain_text("resolved")
    await page.close()

    # an SRE sees where each alert was sent: this backend has no receivers, and says so
    sre = await browser.new_page(viewport={"width": 1400, "height": 1000})
    await sign_in_as(sre, dashboard_url, "sre")
    await sre.goto(dashboard_url + "/alerts")
    await sre.get_by_test_id("alert-history").locator("tr", has_text=site).click()
    await expect(sre.get_by_test_id("deliveries")).to_contain_text(f"Webhook deliveries of alert #{alert_id}")
    await expect(sre.get_by_test_id("deliveries")).to_contain_text("no alert webhooks are configured")
    await sre.close()


async def test_the_reports_page_charts_a_sites_days_and_downloads_them_as_csv(browser: Browser, dashboard_url,
                                                                              js, pool, uid):
    site = f"report-{uid}"
    start = max(datetime.now(UTC) - timedelta(minutes=30), datetime.now(UTC).replace(hour=0, minute=0))
    for n, kind in enumerate(("completed", "no_show", "waiting")):
        ref = f"queue:R{n}-{uid}"
        await publish(js, cloud_event("customer.arrived", ref, {"site": site}, time=start))
        if kind == "completed":
            await publish(js, cloud_event("ticket.called", ref, {"site": site, "counter": "1"},
                                          time=start + timedelta(minutes=3)))
            await publish(js, cloud_event("service.completed", ref, {"site": site, "outcome": "DONE"},
                                          time=start + timedelta(minutes=9)))
        elif kind == "no_show":
            await publish(js, cloud_event("appointment.no_show", ref, {"site": site},
                                          time=start + timedelta(minutes=5)))

    async def rolled_up() -> bool:
        await roll_up_recent(pool, load_sites(), datetime.now(UTC))
        return await pool.fetchval("SELECT arrivals FROM daily_reports WHERE site = $1 AND day = $2", site,
                                   datetime.now(UTC).date()) == 3

    await eventually(rolled_up)
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await sign_in_as(page, dashboard_url, "manager", sites=site)
    # Flow's live figures: the one call waited 3 minutes (target 10); of two ended journeys one was a no-show
    await expect(page.get_by_test_id("share-within_target")).to_have_text("100%", timeout=15_000)
    await expect(page.get_by_test_id("share-no_show_rate")).to_have_text("50%")
    await expect(page.get_by_test_id("share-cancellation_rate")).to_have_text("0%")
    await page.goto(dashboard_url + "/reports")
    summary = page.get_by_test_id("report-summary")
    await expect(summary).to_contain_text("3 arrivals, 1 served, 1 no-shows, 0 cancellations")
    for period in ("year", "week"):
        await page.get_by_test_id("period").get_by_text(period, exact=True).click()
        await expect(summary).to_contain_text("3 arrivals")
    await expect(page.get_by_test_id("chart-volumes").locator(".main-svg").first).to_be_visible()
    await page.wait_for_timeout(500)
    await page.screenshot(path=SCREENSHOTS / "reports.png", full_page=True)
    async with page.expect_download() as download_info:
        await page.get_by_test_id("csv").click()
    download = await download_info.value
    text = Path(await download.path()).read_text()
    assert text.startswith("site,day,arrivals") and f"{site},{datetime.now(UTC).date()},3,1,1,0" in text
    assert errors == []


async def test_search_finds_a_journey_and_its_page_shows_its_command_and_attempts(browser: Browser,
                                                                                   dashboard_url, js, uid):
    site = f"search-{uid}"
    await publish(js, phone_booking(f"appointments:S{uid}", site))  # the phone rule sends `visit.context`
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    await sign_in_as(page, dashboard_url, "manager", site)
    await page.goto(dashboard_url + "/journeys")
    await page.get_by_test_id("search").fill(f"s{uid}")
    await page.get_by_test_id("search").press("Enter")
    await page.get_by_test_id("found").get_by_test_id("journey-link").click(timeout=15_000)
    await expect(page).to_have_url(re.compile(r"/journeys/[0-9a-f-]{36}$"))
    await expect(page.get_by_test_id("timeline")).to_contain_text("appointment.booked")
    await expect(page.get_by_test_id("commands")).to_contain_text("visit.context")
    await page.screenshot(path=SCREENSHOTS / "journey.png", full_page=True)
    # the Commands console lists it with its attempts; a manager gets no resend button
    await page.goto(dashboard_url + "/commands")
    await expect(page.get_by_text("visit.context → queue").first).to_be_visible(timeout=15_000)
    assert await page.get_by_role("button", name="Resend").count() == 0
    await page.close()


async def test_audit_page_filters_and_downloads_csv_and_rules_page_lists_the_rules(browser: Browser,
                                                                                   dashboard_url, api, token,
                                                                                   uid):
    # an audited action of the test's own: the log is not empty whichever tests ran before
    started = await api.post("/api/v1/fallbacks", json={"site": f"audit-{uid}", "system": "crm",
                                                        "reason": "audit page test"},
                             headers={"Authorization": f"Bearer {token('sre')}"})
    assert started.status_code == 201, started.text
    page = await browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    await sign_in_as(page, dashboard_url, "sre")
    await page.goto(dashboard_url + "/rules")
    await expect(page.get_by_test_id("rules")).to_contain_text("visit-context-for-phone-bookings")
    await expect(page.get_by_test_id("ownership")).to_contain_text("appointments")
    await page.screenshot(path=SCREENSHOTS / "rules.png", full_page=True)
    await page.goto(dashboard_url + "/audit")
    await page.get_by_test_id("audit-action").fill(f"nothing-{uid}")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_text("Nothing to show.")).to_be_visible()
    await page.get_by_test_id("audit-action").fill("")
    await page.get_by_role("button", name="Filter").click()
    # times as the site's wall clock with its zone (UTC for sites no sites file names), never a raw ISO string
    await expect(page.get_by_test_id("audit").locator("tbody tr").first).to_contain_text(" UTC")
    async with page.expect_download() as download:
        await page.get_by_test_id("audit-download").click()
    saved = await (await download.value).path()
    assert Path(saved).read_text().startswith("id,at,actor,roles,action,target,site,reason,result")
    await page.screenshot(path=SCREENSHOTS / "audit.png", full_page=True)
    # a refused export says what the backend said, not the client library's words with the backend's URL
    await page.get_by_test_id("audit-since").fill("yesterday-ish")
    await page.get_by_test_id("audit-download").click()
    refused = page.locator(".q-notification").filter(has_text="The export failed")
    await expect(refused).to_contain_text("since: Invalid RFC3339 encoded datetime")
    await expect(refused).not_to_contain_text("http")
    await page.close()


async def test_signing_out_in_one_tab_ends_the_board_in_the_browser_s_other_tabs(
        browser: Browser, dashboard_url, uid):
    """A shared floor tablet: the person who signs out in one tab no longer shows, or acts, in another."""
    tablet = await browser.new_context()
    try:
        first = await tablet.new_page()
        await sign_in_as(first, dashboard_url, "floor_staff", sites=f"site-{uid}")
        second = await tablet.new_page()
        await second.goto(dashboard_url + "/fallback")
        await expect(second.get_by_test_id("who")).to_contain_text("demo-floor_staff")
        await first.get_by_test_id("sign-out").click()
        await first.wait_for_url(dashboard_url + "/signin*")
        await second.wait_for_url(dashboard_url + "/signin*", timeout=10_000)
    finally:
        await tablet.close()


async def test_a_sign_in_gets_a_new_session_so_a_cookie_planted_before_it_is_worth_nothing(
        browser: Browser, dashboard_url, uid):
    """Session fixation: whoever set (or copied) the tablet's cookie before the sign-in is not signed in by
    it afterwards; the person's own tabs are."""
    tablet, planted_with = await browser.new_context(), await browser.new_context()
    try:
        page = await tablet.new_page()
        await page.goto(dashboard_url + "/signin")
        planted = [c for c in await tablet.cookies() if c["name"] == "session"]
        assert planted, "a first visit gets a session cookie"
        await sign_in_as(page, dashboard_url, "manager", sites=f"site-{uid}")
        await planted_with.add_cookies([{"name": "session", "value": planted[0]["value"],
                                         "url": dashboard_url}])
        other = await planted_with.new_page()
        await other.goto(dashboard_url + "/")
        await other.wait_for_url(dashboard_url + "/signin*")
        await page.goto(dashboard_url + "/capacity")
        await expect(page.get_by_test_id("who")).to_contain_text("demo-manager")
    finally:
        await tablet.close()
        await planted_with.close()
