"""Single sign-on (OpenID Connect) with a real provider process (tests/support/oidc_provider.py), a backend
verifying its tokens by its keys, and the dashboard, in real Chromium: sign in, land where the role
allows, see only the mapped sites, survive the access token's expiry by refresh and a provider down at
refresh time, be signed out (open pages too) when the refresh is refused, be told when the provider
cannot be reached, sign out of the provider too; refused: an ID token from a foreign issuer, for another
audience, or tampered with; a person whose groups map to nothing sees the no-access page."""

from __future__ import annotations

import asyncio
import re
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, ViewportSize, expect

from dashboard.oidc import REFUSED, UNREACHABLE_PROVIDER
from tests.support.backends import start_backend
from tests.support.browser import DOC_SCREENSHOTS, running_dashboard, target_size
from tests.support.oidc_provider import Provider, running_provider
from tools.backend_process import BackendProcess
from tools.embedded import free_port

AUDIENCE, CLIENT_ID = "switchboard-api", "switchboard-dashboard"
TOKEN_S = 16  # access and ID tokens live this long; the dashboard refreshes them 10 s before
TABLETS: dict[str, ViewportSize] = {"portrait": {"width": 768, "height": 1024},
                                    "landscape": {"width": 1024, "height": 768}}


@dataclass(frozen=True)
class Sso:
    provider: Provider
    backend: BackendProcess
    url: str  # the dashboard's
    north: str
    south: str


@pytest.fixture(scope="module")
def sso(settings, workdir: Path) -> Iterator[Sso]:
    suffix = uuid.uuid4().hex[:6]
    north, south = f"north-{suffix}", f"south-{suffix}"
    claims_map = workdir / f"claims-map-{suffix}.toml"
    claims_map.write_text(f"""
claims = ["groups"]
[groups."branch-north-floor"]
roles = ["floor_staff"]
sites = ["{north}"]
[groups."branch-south-managers"]
roles = ["manager"]
sites = ["{south}"]
""")
    with running_provider(workdir / f"oidc-provider-{suffix}.log", audience=AUDIENCE,
                          token_max_age_s=TOKEN_S) as provider:
        backend = start_backend(settings, workdir / f"backend-sso-{suffix}.log", {
            "SWITCHBOARD_JWKS_URL": f"{provider.url}/jwks", "SWITCHBOARD_JWT_ISSUER": provider.url,
            "SWITCHBOARD_JWT_AUDIENCE": AUDIENCE, "SWITCHBOARD_CLAIMS_MAP": str(claims_map),
            "SWITCHBOARD_JWKS_COOLDOWN_S": "0.5"})
        try:
            with running_dashboard(backend, settings, workdir / f"dashboard-sso-{suffix}.log", {
                    "SWITCHBOARD_OIDC_ISSUER": provider.url, "SWITCHBOARD_OIDC_CLIENT_ID": CLIENT_ID,
                    # a confidential client, as a server-side dashboard is; with PKCE besides
                    "SWITCHBOARD_OIDC_CLIENT_SECRET": secrets.token_urlsafe(24),
                    "SWITCHBOARD_OIDC_REFRESH_MARGIN_S": "10", "SWITCHBOARD_CLAIMS_MAP": str(claims_map),
                    "SWITCHBOARD_DASHBOARD_DEMO": "false"}, demo=False) as url:
                yield Sso(provider, backend, url, north, south)
        finally:
            backend.stop()


def person(sso: Sso, *groups: str) -> str:
    sub = f"person-{uuid.uuid4().hex[:8]}"
    sso.provider.set_user(sub, groups=list(groups))
    return sub


async def sign_in(page: Page, sso: Sso, sub: str) -> None:
    await page.goto(sso.url + "/signin")
    await page.get_by_test_id("sso-sign-in").click()
    await page.wait_for_url(f"{sso.provider.url}/oauth2/authorize*")
    await page.locator("input[name=sub]").first.fill(sub)
    await page.get_by_role("button", name="Authorize").click()


async def options_shown(page: Page, count: int) -> bool:
    """Whether an open menu shows `count` options within a few seconds."""
    try:
        await expect(page.get_by_role("option")).to_have_count(count, timeout=3000)
    except AssertionError:
        return False
    return True


async def test_sso_sign_in_lands_where_the_role_allows_with_only_the_mapped_sites(browser: Browser, sso: Sso):
    for orientation, viewport in TABLETS.items():
        page = await browser.new_page(viewport=viewport)
        await page.goto(sso.url + "/signin")
        button = page.get_by_test_id("sso-sign-in")
        width, height = await target_size(button)
        assert height >= 44 and width >= 44, (width, height)  # a finger's target
        if orientation == "portrait":
            DOC_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=DOC_SCREENSHOTS / "sso-signin.png")
        sub = person(sso, "branch-north-floor", "branch-south-managers", "vpn-users")
        await sign_in(page, sso, sub)
        # a manager somewhere starts on the flow board; both mapped sites and no other are theirs
        await page.wait_for_url(sso.url + "/")
        await expect(page.get_by_test_id("who")).to_contain_text(sub)
        await expect(page.get_by_test_id("who")).to_contain_text(f"{sso.north}, {sso.south}")
        await page.goto(sso.url + "/floor")
        # a click before the page is mounted and connected opened no menu on a loaded machine: wait for both
        await expect(page.get_by_test_id("banner")).to_be_hidden()
        site_menu = page.get_by_test_id("floor-site")
        await expect(site_menu).to_contain_text(re.compile(f"{sso.north}|{sso.south}"))
        # the menu opens after the click: read it once its options are there (an instant read once saw none);
        # a click the page took while it re-rendered opened nothing on a loaded machine: click again then
        for _ in range(3):
            await site_menu.click()
            if await options_shown(page, 2):
                break
        await expect(page.get_by_role("option")).to_have_count(2)
        options = await page.get_by_role("option").all_inner_texts()
        assert sorted(options) == [sso.north, sso.south]
        await page.close()

    floor_only = person(sso, "branch-north-floor")
    page = await browser.new_page(viewport=TABLETS["landscape"])
    await sign_in(page, sso, floor_only)
    await page.wait_for_url(sso.url + "/floor")  # floor staff start on the floor
    await expect(page.get_by_test_id("who")).to_contain_text(f"floor_staff · {sso.north}")
    await expect(page.get_by_test_id("call-next")).to_be_visible()
    await expect(page.get_by_test_id("banner")).to_be_hidden()  # the live websocket took the person's token
    sign_out = page.get_by_test_id("sign-out")
    _, height = await target_size(sign_out)
    assert height >= 44, height
    await page.screenshot(path=DOC_SCREENSHOTS / "sso-landing.png")
    await page.close()


async def test_sso_remembers_the_site_a_person_last_chose_and_acts_only_where_floor_staff(
        browser: Browser, sso: Sso):
    sub = person(sso, "branch-north-floor", "branch-south-managers")
    page = await browser.new_page(viewport=TABLETS["portrait"])
    await sign_in(page, sso, sub)
    await page.wait_for_url(sso.url + "/")
    await page.goto(f"{sso.url}/floor?site={sso.north}")
    await expect(page.get_by_test_id("floor-site")).to_contain_text(sso.north)
    await expect(page.get_by_test_id("blocked")).to_have_count(0)  # floor staff here
    await page.goto(f"{sso.url}/floor?site={sso.south}")
    await expect(page.get_by_test_id("floor-site")).to_contain_text(sso.south)
    # a manager here, not floor staff: the floor's buttons say so rather than meet a 403
    await expect(page.get_by_test_id("blocked")).to_contain_text(f"floor_staff or sre role at {sso.south}")
    # the Fallback page alike: no Start at the site where they manage, Start where they are floor staff
    await page.goto(sso.url + "/fallback")
    for site, may_act in ((sso.south, False), (sso.north, True)):
        await page.get_by_test_id("fallback-site").click()
        await page.get_by_role("option", name=site, exact=True).click()
        start = page.get_by_test_id("system-queue").get_by_role("button", name="Start fallback…")
        if may_act:
            await expect(page.get_by_test_id("blocked")).to_be_hidden()
            await expect(start).to_be_enabled()
        else:
            await expect(page.get_by_test_id("blocked")).to_contain_text(f"floor_staff or sre role at {site}")
            await expect(start).to_be_disabled()
    await page.close()
    # another browser (another tablet), the same person: the floor opens on the site they chose
    context = await browser.new_context(viewport=TABLETS["landscape"])
    page = await context.new_page()
    await sign_in(page, sso, sub)
    await page.wait_for_url(sso.url + "/")
    await page.goto(sso.url + "/floor")
    await expect(page.get_by_test_id("floor-site")).to_contain_text(sso.south)
    await context.close()


async def test_sso_survives_the_access_tokens_expiry_by_refresh_and_signs_out_when_it_fails(
        browser: Browser, sso: Sso):
    sub = person(sso, "branch-south-managers")
    page = await browser.new_page(viewport=TABLETS["landscape"])
    await sign_in(page, sso, sub)
    await page.wait_for_url(sso.url + "/")
    # past the first two access tokens' expiry. The provider's answer to a refresh says an hour (authlib's
    # default) of a token that lives TOKEN_S: the dashboard goes by the token's own `exp`
    await asyncio.sleep(2 * TOKEN_S)
    await expect(page.get_by_test_id("banner")).to_be_hidden()  # this page's live connection went on too
    await page.goto(sso.url + "/capacity")
    await expect(page.get_by_test_id("who")).to_contain_text(sub)
    await expect(page.get_by_test_id("banner")).to_be_hidden()  # the live connection is up, not ended
    await expect(page.get_by_test_id("unavailable")).to_have_count(0)  # the backend took the fresh token
    assert sso.provider.refreshes(sub)["asked"] >= 2  # kept signed in by refreshes, not by a longer token

    sso.provider.revoke(sub)  # the provider withdraws the person's tokens: the next refresh is refused
    # the open page, untouched, goes to the sign-in page by itself: a shared tablet shows no one's board
    await page.wait_for_url(sso.url + "/signin", timeout=(TOKEN_S - 10 + 5) * 1000)
    await page.goto(sso.url + "/capacity")
    await page.wait_for_url(sso.url + "/signin")
    await page.close()


async def test_sso_rides_out_a_provider_down_when_the_token_is_due_for_refresh(browser: Browser, sso: Sso):
    sub = person(sso, "branch-south-managers")
    # the first three refreshes (10 s before expiry, then each second) are answered 503
    sso.provider.refresh_outage(sub, refreshes=3)
    page = await browser.new_page(viewport=TABLETS["landscape"])
    await sign_in(page, sso, sub)
    await page.wait_for_url(sso.url + "/")
    await asyncio.sleep(TOKEN_S + 2)  # past the first token's expiry: refreshed once the provider was back
    await expect(page.get_by_test_id("banner")).to_be_hidden()
    await page.goto(sso.url + "/capacity")
    await expect(page.get_by_test_id("who")).to_contain_text(sub)
    # the outage was met (three refreshes answered 503) and ridden out by the one after it
    met = sso.provider.refreshes(sub)
    assert met["outage_left"] == 0 and met["asked"] >= 4, met
    await page.close()


async def test_sso_sign_out_ends_the_provider_session_too(browser: Browser, sso: Sso):
    sub = person(sso, "branch-south-managers")
    page = await browser.new_page(viewport=TABLETS["landscape"])
    await sign_in(page, sso, sub)
    await page.wait_for_url(sso.url + "/")
    await page.get_by_test_id("sign-out").click()
    # the provider's end-session page (RP-initiated logout), with the ID token as hint
    await page.wait_for_url(f"{sso.provider.url}/oauth2/end_session*")
    assert "id_token_hint=" in page.url and "post_logout_redirect_uri=" in page.url
    await page.get_by_role("button", name="End session").click()
    await page.wait_for_url(sso.url + "/signin*")
    await page.goto(sso.url + "/")
    await page.wait_for_url(sso.url + "/signin")
    await page.close()


async def test_sso_person_with_no_mapped_group_sees_the_no_access_page(browser: Browser, sso: Sso):
    sub = person(sso, "vpn-users", "branch-east-floor")
    page = await browser.new_page(viewport=TABLETS["portrait"])
    await sign_in(page, sso, sub)
    await page.wait_for_url(sso.url + "/no-access")
    await expect(page.get_by_test_id("no-access")).to_contain_text("none of your groups gives you a role")
    await page.screenshot(path=DOC_SCREENSHOTS / "sso-no-access.png")
    await page.goto(sso.url + "/")  # any board page sends them back here
    await page.wait_for_url(sso.url + "/no-access")
    _, height = await target_size(page.get_by_test_id("sign-out"))
    assert height >= 44, height
    await page.close()


@pytest.mark.parametrize("mischief", ["foreign_issuer", "wrong_audience", "tampered"])
async def test_sso_refuses_an_id_token_that_does_not_verify(browser: Browser, sso: Sso, mischief: str):
    sub = person(sso, "branch-south-managers")
    sso.provider.misbehave(sub, mischief)
    page = await browser.new_page(viewport=TABLETS["landscape"])
    await sign_in(page, sso, sub)
    await page.wait_for_url(sso.url + "/signin")
    await expect(page.get_by_test_id("signin-error")).to_have_text(REFUSED)
    await page.goto(sso.url + "/")
    await page.wait_for_url(sso.url + "/signin")  # nothing was kept
    await page.close()


async def test_sso_with_the_provider_unreachable_says_so_on_the_sign_in_page(browser: Browser, sso: Sso,
                                                                             settings, workdir: Path):
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    log = workdir / f"dashboard-sso-down-{uuid.uuid4().hex[:6]}.log"
    with running_dashboard(sso.backend, settings, log, {
            "SWITCHBOARD_OIDC_ISSUER": down, "SWITCHBOARD_OIDC_CLIENT_ID": CLIENT_ID,
            "SWITCHBOARD_DASHBOARD_DEMO": "false"}, demo=False) as url:
        page = await browser.new_page(viewport=TABLETS["portrait"])
        await page.goto(url + "/signin")
        await page.get_by_test_id("sso-sign-in").click()
        await page.wait_for_url(url + "/signin")
        await expect(page.get_by_test_id("signin-error")).to_have_text(UNREACHABLE_PROVIDER)
        await page.close()
