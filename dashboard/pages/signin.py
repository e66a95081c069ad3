"""Sign-in: paste a token, or in demo mode pick a role and site and let the dashboard mint one.

A pasted token is tried against the backend before it is accepted, so a wrong or expired token is
refused here with the backend's reason rather than on every page after.
"""

from __future__ import annotations

from datetime import timedelta

from nicegui import app, ui

from dashboard.backend_client import BackendClient, BackendError
from dashboard.context import Dashboard
from dashboard.session import Principal

DEMO_ROLES = ("manager", "floor_staff", "sre", "admin")
DEMO_TOKEN_TTL = timedelta(hours=12)


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


def register(dashboard: Dashboard) -> None:
    @ui.page("/signin")
    def signin_page() -> None:
        browser_id = app.storage.browser["id"]
        ui.page_title("Sign in · Switchboard")

        async def sign_in(token: str) -> None:
            problem = await check_token(dashboard, token)
            if problem:
                error.set_text(problem)
                return
            dashboard.sessions.sign_in(browser_id, token)
            ui.navigate.to("/")

        with ui.card().classes("absolute-center w-[32rem]"):
            ui.label("Switchboard").classes("text-2xl font-bold").props("role=heading aria-level=1")
            token = ui.textarea("Token", placeholder="paste a token (switchboard token --role … --site …)") \
                .classes("w-full").props("data-testid=token")
            ui.button("Sign in", on_click=lambda: sign_in(token.value.strip())).props("data-testid=sign-in")
            if dashboard.demo:
                ui.separator()
                ui.label("Demo mode: sign in as").classes("font-medium")
                with ui.row().classes("items-end"):
                    role = ui.select(list(DEMO_ROLES), value="manager", label="Role").classes("w-40") \
                        .props("data-testid=demo-role")
                    site = ui.input("Sites", value="*").classes("w-40").props("data-testid=demo-site")
                    ui.button("Enter",
                              on_click=lambda: sign_in(mint_demo_token(dashboard, role.value, site.value))) \
                        .props("data-testid=demo-enter")
            error = ui.label().classes("text-red-700").props("data-testid=signin-error")
