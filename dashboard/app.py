"""`switchboard dashboard`: the NiceGUI process, its pages and its lifecycle."""

from __future__ import annotations

import ipaddress
import logging
import secrets
import sys

from nicegui import app, ui

from dashboard.context import Dashboard
from dashboard.frame import apply_theme
from dashboard.page_guard import guard_pages
from dashboard.pages import (
    alerts,
    audit,
    capacity,
    commands,
    failures,
    fallback,
    floor,
    flow,
    integrations,
    journey,
    journeys,
    reconciliation,
    reports,
    rules,
    signin,
)
from dashboard.settings import DashboardSettings
from switchboard.claims_map import configured_claims_map

log = logging.getLogger(__name__)
IDLE_CHECK_S = 60.0  # how often sign-ins without an open tab are looked for
PAGES = (signin, flow, floor, capacity, journeys, journey, commands, failures, integrations, reconciliation,
         fallback, rules, reports, alerts, audit)


def build(settings: DashboardSettings, *, demo: bool | None = None) -> Dashboard:
    """Register every page and the shutdown hook; returns the process's dashboard state."""
    configured_claims_map()  # a claims map that cannot be used stops the start, with its reason
    dashboard = Dashboard(settings=settings, backend_url=settings.dashboard.backend_url,
                          demo=settings.dashboard.dashboard_demo if demo is None else demo)
    apply_theme()
    for page in PAGES:
        page.register(dashboard)
    app.on_shutdown(dashboard.live.close_all)
    app.timer(IDLE_CHECK_S, lambda: dashboard.forget_idle(signin.open_browsers()), immediate=False)
    oidc = dashboard.oidc
    if oidc is not None:
        app.on_startup(lambda: oidc.start_refresher(dashboard.sessions, signin.leave_open_tabs))
        app.on_shutdown(oidc.stop_refresher)
    return dashboard


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _refuse_unsafe_demo(settings: DashboardSettings, host: str, port: int) -> None:
    """Demo mode hands anyone who reaches the page any role, admin included: this machine's users only."""
    from switchboard.tokens import jwt_secret  # noqa: PLC0415 - demo mode only: a real deployment never mints

    if not is_loopback(host):
        sys.exit(f"dashboard not started: demo mode (anyone may sign in as any role, admin included) serves "
                 f"loopback only (127.0.0.0/8, ::1, localhost), not --host {host}; bind to 127.0.0.1 or turn "
                 "demo mode off (no --demo, SWITCHBOARD_DASHBOARD_DEMO unset)")
    try:
        jwt_secret(settings.tokens)
    except ValueError as exc:
        sys.exit(f"dashboard not started: demo mode mints tokens, and {exc}")
    log.warning("demo mode is on: anyone reaching %s:%s may sign in as any role, admin included", host, port)


def run(settings: DashboardSettings, *, host: str, port: int, demo: bool | None = None) -> None:
    demo = settings.dashboard.dashboard_demo if demo is None else demo
    if demo:
        _refuse_unsafe_demo(settings, host, port)
    build(settings, demo=demo)
    # sessions live in this process only, so a fresh secret per start costs nothing but a sign-in
    storage_secret = secrets.token_urlsafe(32)
    guard_pages(app, storage_secret)
    ui.run(host=host, port=port, title="Switchboard", reload=False, show=False, show_welcome_message=False,
           storage_secret=storage_secret, favicon="🔀", uvicorn_logging_level="warning", language="en-US",
           log_config=None)  # keep the scrubbing JSON handler of switchboard/logs.py
