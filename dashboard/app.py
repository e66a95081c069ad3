"""`switchboard dashboard`: the NiceGUI process, its pages and its lifecycle."""

from __future__ import annotations

import logging
import secrets

from nicegui import app, ui

from dashboard.context import Dashboard
from dashboard.page_guard import guard_pages
from dashboard.pages import (
    capacity,
    failures,
    fallback,
    flow,
    integrations,
    journeys,
    listing,
    reconciliation,
    signin,
)
from switchboard.settings import Settings

PAGES = (signin, flow, capacity, journeys, failures, integrations, reconciliation, fallback, listing)


def build(settings: Settings, *, demo: bool | None = None) -> Dashboard:
    """Register every page and the shutdown hook; returns the process's dashboard state."""
    dashboard = Dashboard(settings=settings, backend_url=settings.backend_url,
                          demo=settings.dashboard_demo if demo is None else demo)
    for page in PAGES:
        page.register(dashboard)
    app.on_shutdown(dashboard.live.close_all)
    return dashboard


def run(settings: Settings, *, host: str, port: int, demo: bool | None = None) -> None:
    build(settings, demo=demo)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per backend request drowns the log
    # sessions live in this process only, so a fresh secret per start costs nothing but a sign-in
    storage_secret = secrets.token_urlsafe(32)
    guard_pages(app, storage_secret)
    ui.run(host=host, port=port, title="Switchboard", reload=False, show=False, show_welcome_message=False,
           storage_secret=storage_secret, favicon="🔀", uvicorn_logging_level="warning",
           log_config=None)  # keep the scrubbing JSON handler of switchboard/logs.py
