"""End to end in a real headless Chromium (Debian's `chromium`): a running backend, a running
`switchboard dashboard`, events published on NATS. Every page is saved as a screenshot under
artifacts/screenshots/."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from switchboard.settings import Settings
from tests.support.backends import backend_env
from tests.support.database import refusing_site
from tests.support.events import cloud_event, phone_booking, publish
from tools.backend_process import BackendProcess
from tools.embedded import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
PAGES = ("/", "/capacity", "/journeys", "/commands", "/failures", "/integrations", "/reconciliation", "/fallback",
         "/rules", "/audit")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dashboard_url(backend: BackendProcess, settings: Settings, workdir: Path) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = workdir / "dashboard.log"
    env = {**backend_env(settings), "SWITCHBOARD_BACKEND_URL": backend.url}
    env.pop("PYTEST_CURRENT_TEST", None)  # NiceGUI would take the process for a test of its own
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tools.cli", "dashboard", "--demo", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log_path.read_text()[-2000:]
            assert time.monotonic() < deadline, "the dashboard did not start within 60 s"
            try:
                with urllib.request.urlopen(url + "/signin", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


async def sign_in_as(page: Page, url: str, role: str, sites: str = "*") -> None:
    await page.goto(url + "/signin")
    await page.get_by_test_id("demo-role").click()
    await page.get_by_role("option", name=role, exact=True).click()
    await page.get_by_test_id("demo-site").fill(sites)
    await page.get_by_test_id("demo-enter").click()
    await expect(page.get_by_test_id("who")).to_contain_text(f"demo-{role}")


async def test_a_count_on_the_board_changes_after_an_event_is_published(browser: Browser, dashboard_url, js, uid):
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    await sign_in_as(page, dashboard_url, "manager")
    arrived = page.get_by_test_id("count-arrived")
    await expect(page.get_by_test_id("banner")).to_be_hidden()
    before = int(await arrived.inner_text())
    await publish(js, cloud_event("customer.arrived", f"queue:T-{uid}", {"site": f"site-{uid}"}))
    await expect(arrived).to_have_text(str(before + 1), timeout=15_000)
    await page.close()


async def test_every_page_renders_for_an_sre_and_is_saved_as_a_screenshot(browser: Browser, dashboard_url, js, uid):
    site = f"site-{uid}"
    await publish(js, cloud_event("capacity.changed", f"site:{site}", {
        "site": site, "counters_open": 3, "counters_busy": 2, "staff_on_duty": 4, "queue_length": 5}, source="/queue"))
    await publish(js, cloud_event("ticket.issued", f"queue:T-{uid}", {"site": site, "ticket": f"T-{uid}",
                                                                      "queue_name": "main"}))
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await sign_in_as(page, dashboard_url, "sre")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for path in PAGES:
        await page.goto(dashboard_url + (f"/journeys?ref=queue:T-{uid}" if path == "/journeys" else path))
        await expect(page.get_by_test_id("who")).to_contain_text("demo-sre")
        if path == "/capacity":
            await expect(page.get_by_test_id(f"capacity-{site}")).to_contain_text("3 / 2")
        if path == "/journeys":
            await expect(page.get_by_test_id("timeline")).to_contain_text("ticket.issued")
        await page.wait_for_timeout(500)  # let plotly finish drawing before the picture
        await page.screenshot(path=SCREENSHOTS / f"{path.strip('/') or 'flow'}.png", full_page=True)
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_test_id("demo-enter")).to_be_visible()
    await page.screenshot(path=SCREENSHOTS / "signin.png")
    assert errors == []
    assert {p.name for p in SCREENSHOTS.glob("*.png")} >= {f"{p.strip('/') or 'flow'}.png" for p in PAGES} | {
        "signin.png"}
    await page.close()


async def test_retry_on_a_failure_resolves_it_once_its_cause_is_fixed(browser: Browser, dashboard_url, js, pool, uid):
    site = f"poison-{uid}"
    async with refusing_site(pool, site):  # the event becomes an apply_error until the cause is fixed
        await publish(js, cloud_event("customer.arrived", f"queue:P-{uid}", {"site": site}))
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        await sign_in_as(page, dashboard_url, "sre")
        await page.goto(dashboard_url + "/failures")
        row = page.locator("tr", has_text=site)
        await expect(row).to_be_visible(timeout=15_000)
    await row.locator(".q-checkbox").click()
    await page.get_by_role("button", name="Retry", exact=True).click()
    await expect(page.get_by_test_id("outcome")).to_contain_text("resolved", timeout=15_000)
    await expect(row).to_be_hidden(timeout=15_000)  # resolved: it leaves the open failures, live
    assert await pool.fetchval("SELECT status FROM failures WHERE site = $1", site) == "resolved"
    assert await pool.fetchval("SELECT count(*) FROM journeys WHERE site = $1", site) == 1
    await page.close()


async def test_floor_staff_start_a_fallback_and_check_a_customer_in_by_hand(browser: Browser, dashboard_url, pool,
                                                                          uid):
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
    journey = await pool.fetchrow("SELECT j.stage, e.source FROM journeys j JOIN events e ON e.journey_id = j.id"
                                  " WHERE j.site = $1", site)
    assert (journey["stage"], journey["source"]) == ("arrived", "/manual/demo-floor_staff")
    assert await pool.fetchval("SELECT count(*) FROM fallback_ledger l JOIN fallbacks f ON f.id = l.fallback_id"
                               " WHERE f.site = $1 AND l.action = 'check_in'", site) == 1
    await page.close()


async def test_search_finds_a_journey_and_its_page_shows_its_command_and_attempts(browser: Browser, dashboard_url,
                                                                                   js, uid):
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


async def test_audit_page_filters_and_downloads_csv_and_rules_page_lists_the_rules(browser: Browser, dashboard_url,
                                                                                   uid):
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
    async with page.expect_download() as download:
        await page.get_by_test_id("audit-download").click()
    saved = await (await download.value).path()
    assert Path(saved).read_text().startswith("id,at,actor,roles,action,target,site,reason,result")
    await page.screenshot(path=SCREENSHOTS / "audit.png", full_page=True)
    await page.close()
