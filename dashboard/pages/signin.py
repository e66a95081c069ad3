"""Sign-in: through the organisation's identity provider (dashboard/oidc.py) when one is configured; by
pasting a token (SREs, scripts); or in demo mode, on loopback only, by picking a role and site.

A pasted token is tried against the backend before it is accepted, so a wrong or expired token is
refused here with the backend's reason rather than on every page after. A person the provider signs in
whose groups give them no role sees the no-access page, which says so and how to get access.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

import httpx2
from fastapi import Request
from fastapi.responses import RedirectResponse
from nicegui import Client, app, ui

from dashboard.backend_client import BackendClient, BackendError
from dashboard.context import Dashboard
from dashboard.frame import page, sign_out_path
from dashboard.oidc import REFUSED, UNREACHABLE_PROVIDER, SignInRefused
from dashboard.session import Principal

log = logging.getLogger(__name__)

DEMO_ROLES = ("manager", "floor_staff", "sre", "admin")
DEMO_TOKEN_TTL = timedelta(hours=12)
TOUCH = "min-h-12 text-base"  # touch targets of 48 px at least (tablets)


async def check_token(dashboard: Dashboard, token: str) -> str | None:
    """Why `token` cannot be used on this board, or None when it can."""
    try:
        principal = Principal.from_token(token)
    except ValueError as exc:
        return str(exc)
    if principal.expired:
        return "this token has expired"
    if not principal.may_read:
        return "this token has no role that may read the board (manager, floor_staff, sre or admin)"
    try:
        async with BackendClient(dashboard.backend_url, token) as http:
            await http.get("/api/v1/flow")
    except BackendError as exc:
        return f"the backend refused this token: {exc}" if exc.status in (401, 403) else str(exc)
    return None


def mint_demo_token(dashboard: Dashboard, role: str, site: str) -> str:
    from switchboard.tokens import mint_token  # noqa: PLC0415 - demo mode only: a real deployment never mints

    sites: str | list[str] = "*" if site.strip() in ("", "*") \
        else [s.strip() for s in site.split(",") if s.strip()]
    return mint_token(dashboard.settings.tokens, sub=f"demo-{role}", roles=[role], sites=sites,
                      ttl=DEMO_TOKEN_TTL)


def landing(principal: Principal) -> str:
    """The page a role starts on: the floor for floor staff, the flow board for everyone else."""
    return "/" if principal.has("manager", "sre") else "/floor"


def register(dashboard: Dashboard) -> None:
    _register_sso(dashboard)

    @app.get("/auth/token", include_in_schema=False)
    async def token_sign_in(request: Request, once: str = "") -> RedirectResponse:
        """A pasted (or demo) token checked on the sign-in page, signed in under a new session id (no
        fixation: a session id someone planted before the sign-in is worth nothing after it)."""
        token = dashboard.take_over(once, request.session.get("id", ""))
        if token is None:
            dashboard.refuse(request.session.get("id", ""),
                             "that sign-in was not finished in time (or in this browser): sign in again")
            return RedirectResponse("/signin", status_code=303)
        dashboard.sessions.sign_out(request.session["id"])
        request.session["id"] = browser_id = str(uuid.uuid4())
        dashboard.sessions.sign_in(browser_id, token)
        return RedirectResponse("/", status_code=303)

    @page("/signin")
    def signin_page() -> RedirectResponse | None:
        browser_id = app.storage.browser["id"]
        current = dashboard.sessions.current(browser_id)
        if current is not None and not Principal.from_token(current.access_token).may_read:
            return RedirectResponse("/no-access", status_code=303)
        ui.page_title("Sign in · Switchboard")

        async def sign_in(token: str) -> None:
            problem = await check_token(dashboard, token)
            if problem:
                error.set_text(problem)
                return
            ui.navigate.to(f"/auth/token?once={dashboard.hand_over(browser_id, token)}")

        with ui.column().classes("w-full items-center p-4"), \
                ui.card().classes("w-full max-w-lg mt-[10vh] gap-4"):
            ui.label("Switchboard").classes("text-2xl font-bold").props("role=heading aria-level=1")
            if dashboard.oidc is not None:
                ui.label("Sign in with your organisation's account.")
                ui.link("Sign in", "/auth/login").classes(
                    f"{TOUCH} w-full flex items-center justify-center rounded bg-primary text-white "
                    "no-underline text-lg font-medium").props("data-testid=sso-sign-in")
            error = ui.label(dashboard.refusals.pop(browser_id, "")).classes("text-red-700") \
                .props("role=alert data-testid=signin-error")
            paste = ui.expansion("Sign in with a token (SREs, scripts)").classes("w-full") \
                if dashboard.oidc is not None else ui.column().classes("w-full gap-2")
            with paste:
                token = ui.textarea("Token",
                                    placeholder="paste a token (switchboard token --role … --site …)"
                                    ).classes("w-full").props("data-testid=token")
                ui.button("Sign in", on_click=lambda: sign_in(token.value.strip())) \
                    .classes(TOUCH).props("data-testid=sign-in")
            if dashboard.demo:
                ui.separator()
                ui.label("Demo mode: sign in as").classes("font-medium")
                with ui.row().classes("items-end"):
                    role = ui.select(list(DEMO_ROLES), value="manager", label="Role").classes("w-40") \
                        .props("data-testid=demo-role")
                    site = ui.input("Sites", value="*").classes("w-40").props("data-testid=demo-site")
                    ui.button("Enter",
                              on_click=lambda: sign_in(mint_demo_token(dashboard, role.value, site.value))) \
                        .classes(TOUCH).props("data-testid=demo-enter")
        return None

    @page("/no-access")
    def no_access_page() -> RedirectResponse | None:
        current = dashboard.sessions.current(app.storage.browser["id"])
        if current is None:
            return RedirectResponse("/signin", status_code=303)
        if Principal.from_token(current.access_token).may_read:
            return RedirectResponse("/", status_code=303)
        ui.page_title("No access · Switchboard")
        with ui.column().classes("w-full items-center p-4"), \
                ui.card().classes("w-full max-w-lg mt-[10vh] gap-4").props("data-testid=no-access"):
            ui.label("No access to Switchboard").classes("text-2xl font-bold") \
                .props("role=heading aria-level=1")
            ui.label("You are signed in, but none of your groups gives you a role on this board.")
            ui.label("Ask your IT service desk to add you to your branch's Switchboard group (for example "
                     "floor staff or managers of your branch). Then sign in again.")
            ui.link("Sign out", sign_out_path()).classes(
                f"{TOUCH} w-full flex items-center justify-center rounded bg-primary text-white no-underline "
                "text-lg").props("data-testid=sign-out")
        return None


def _register_sso(dashboard: Dashboard) -> None:
    @app.get("/auth/login", include_in_schema=False)
    async def oidc_login(request: Request) -> RedirectResponse:
        if dashboard.oidc is None:
            return RedirectResponse("/signin", status_code=303)
        try:
            return await dashboard.oidc.start(request)
        except (SignInRefused, OSError, ValueError, httpx2.HTTPError) as exc:  # Authlib's: no OSErrors
            log.warning("single sign-on could not start: %s", exc)
            dashboard.refuse(request.session["id"], UNREACHABLE_PROVIDER)
            return RedirectResponse("/signin", status_code=303)

    @app.get("/auth/callback", include_in_schema=False, name="oidc_callback")
    async def oidc_callback(request: Request) -> RedirectResponse:
        if dashboard.oidc is None:
            return RedirectResponse("/signin", status_code=303)
        try:
            sign_in = await dashboard.oidc.finish(request)
        except SignInRefused as exc:
            log.warning("sign-in refused: %s", exc)
            dashboard.refuse(request.session["id"], REFUSED)
            return RedirectResponse("/signin", status_code=303)
        except httpx2.HTTPError as exc:  # its token endpoint, after the sign-in page answered
            log.warning("single sign-on could not finish: %s", type(exc).__name__)
            dashboard.refuse(request.session["id"], UNREACHABLE_PROVIDER)
            return RedirectResponse("/signin", status_code=303)
        dashboard.sessions.sign_out(request.session["id"])
        request.session["id"] = browser_id = str(uuid.uuid4())  # a new session id at sign-in (no fixation)
        dashboard.sessions.sign_in(browser_id, sign_in)
        principal = Principal.from_token(sign_in.access_token)
        return RedirectResponse(landing(principal) if principal.may_read else "/no-access", status_code=303)

    @app.get("/auth/logout", include_in_schema=False)
    async def sign_out(request: Request) -> RedirectResponse:
        sign_in = dashboard.sessions.sign_out(request.session["id"])
        leave_open_tabs(request.session["id"], but=request.query_params.get("tab"))
        if dashboard.oidc is None or (sign_in is not None and not sign_in.from_provider):
            return RedirectResponse("/signin", status_code=303)
        after = f"{str(request.base_url).rstrip('/')}/signin"
        return await dashboard.oidc.end_session(request, sign_in, after)


def open_browsers() -> set[str]:
    """The session ids of the browsers with a tab connected now."""
    return {str(client.request.session.get("id")) for client in list(Client.instances.values())
            if client.has_socket_connection}


def leave_open_tabs(browser_id: str, but: str | None = None) -> None:
    """The browser's open tabs but the one signing out go to the sign-in page: a shared tablet signed out in
    one tab must not go on showing the board, or acting, as the person who left."""
    for client in list(Client.instances.values()):
        same_browser = client.request.session.get("id") == browser_id
        if same_browser and client.id != but and client.has_socket_connection:
            with client:
                ui.navigate.to("/signin")
