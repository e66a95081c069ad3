"""Every page of the board, as a signed-in SRE sees it with a fallback under way, checked by axe-core in a
real Chromium: no serious or critical accessibility violation anywhere."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, expect

from tests.support import fallbacks
from tests.support.axe import blocking, violations
from tests.support.browser import sign_in_as
from tests.support.simulators import journey_of
from tests.support.waits import eventually

pytestmark = pytest.mark.slow

# what a page with a path parameter is opened with; a new parameterised page must add its example here
# (`{journey}`: the id of the journey the test checks a customer in to)
EXAMPLES: dict[str, str] = {"/journeys/{journey_id}": "/journeys/{journey}"}


def openable(route: str, ref: str, journey: str) -> str:
    if "{" in route:
        assert route in EXAMPLES, f"{route} has a path parameter: add an example to EXAMPLES"
        return EXAMPLES[route].format(journey=journey)
    return f"{route}?ref={ref}" if route == "/journeys" else route


@pytest.mark.parametrize("viewport", [{"width": 1280, "height": 900}, {"width": 1024, "height": 768},
                                      {"width": 768, "height": 1024}],
                         ids=["desktop", "tablet-landscape", "tablet-portrait"])
async def test_no_page_of_the_board_has_a_serious_or_critical_accessibility_violation(
        browser: Browser, dashboard_url, board_routes, axe_source, api, token, uid, viewport):
    site = f"axe-{uid}"
    staff = {"Authorization": f"Bearer {token('floor_staff', [site])}"}
    fallback = (await fallbacks.start(api, staff, site)).json()
    checked_in = await fallbacks.acted(api, staff, fallback["id"], action="check_in")
    journey = await eventually(lambda: journey_of(api, staff, checked_in["ref"]))
    assert len(board_routes) >= 9 and "/signin" in board_routes and "/fallback" in board_routes
    page = await browser.new_page(viewport=viewport)
    found: dict[str, list[dict]] = {}
    await page.goto(dashboard_url + "/signin")
    found["/signin"] = await violations(page, axe_source)
    await sign_in_as(page, dashboard_url, "sre", sites=site)
    for route in board_routes:
        if route == "/signin":
            continue
        await page.goto(dashboard_url + openable(route, checked_in["ref"], journey["id"]))
        await expect(page.get_by_test_id("who")).to_contain_text("demo-sre")
        await page.wait_for_load_state("networkidle")
        await page.wait_for_timeout(500)  # live snapshots and charts drawn
        found[route] = await violations(page, axe_source)
    await page.close()
    assert set(found) == set(board_routes)
    serious = {route: blocking(v) for route, v in found.items() if blocking(v)}
    assert serious == {}, "\n".join(f"{route}: {v['impact']} {v['rule']} ({v['help']}): {v['elements']}"
                                    for route, vs in serious.items() for v in vs)
