"""The layout every page shares: navigation that follows the viewer's role, who is signed in, the
connection banner that says when the live connection is lost and since when, and the alerts banner with
the active alerts of the viewer's sites (live topic `alerts`; the backend scopes it to the token)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from nicegui import app, ui

from dashboard.context import Viewer
from dashboard.live import CONNECTION, LiveState
from dashboard.session import Principal
from dashboard.sites import SiteBook

# How long a page may take to build before NiceGUI answers with its own error page (its default is 3 s): a
# page asks the backend for the viewer's sites, and most for their data, each call allowed 10 s, so a slow
# backend (an incident) would otherwise show that error instead of the board or our own message.
PAGE_BUILD_TIMEOUT_S = 30.0


def page(path: str) -> Any:
    """`ui.page` for a page of the board."""
    return ui.page(path, response_timeout=PAGE_BUILD_TIMEOUT_S)


# Quasar's colours darkened until white text on them reads at 4.5:1 or better (WCAG AA), board-wide
THEME = {"primary": "#1d4ed8", "secondary": "#0f766e", "accent": "#7e22ce", "positive": "#15803d",
         "negative": "#b91c1c", "info": "#0e7490", "warning": "#9a3412"}


# a table's cells wrap to fit the width: a region scrolling sideways is one a keyboard cannot reach
WRAPPED_TABLE = 'wrap-cells table-style="table-layout: fixed; overflow-wrap: anywhere"'


def apply_theme() -> None:
    app.colors(**THEME)
    # NiceGUI's link blue reads at 3.7:1 on white; the theme's primary at 6.7:1
    ui.add_css(f".nicegui-link {{ color: {THEME['primary']}; }}", shared=True)


@dataclass(frozen=True)
class NavItem:
    label: str
    path: str
    icon: str
    roles: frozenset[str] | None = None  # None: every reader

    def visible_to(self, principal: Principal) -> bool:
        return self.roles is None or principal.has(*self.roles)


NAVIGATION = (
    NavItem("Flow", "/", "timeline"),
    NavItem("Floor", "/floor", "storefront"),
    NavItem("Capacity", "/capacity", "groups"),
    NavItem("Journeys", "/journeys", "search"),
    NavItem("Commands", "/commands", "send"),
    NavItem("Failures", "/failures", "error_outline"),
    NavItem("Integrations", "/integrations", "hub"),
    NavItem("Reconciliation", "/reconciliation", "compare_arrows"),
    NavItem("Fallback", "/fallback", "back_hand"),
    NavItem("Rules", "/rules", "rule"),
    NavItem("Reports", "/reports", "insights"),
    NavItem("Alerts", "/alerts", "notifications"),
    NavItem("Audit", "/audit", "policy", frozenset({"sre", "admin"})),
)


def connection_text(state: LiveState, sites: SiteBook | None = None) -> str:
    """Empty while connected; otherwise what is wrong and since when (in the viewer's site's zone)."""
    if state.ended:
        return f"Live updates stopped: {state.ended}."
    if state.connected:
        return ""
    if state.lost_since is None:
        return "Connecting to the backend…"
    return (f"Connection to the backend lost since {(sites or SiteBook()).time(state.lost_since)}; what you"
            f" see may be out of date. Reconnecting (attempt {state.attempts})…")


MAX_BANNER_ALERTS = 3
BANNER_CLASSES = {"open": "bg-red-800", "acknowledged": "bg-amber-700"}


def active_alerts(alerts: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Open before acknowledged, newest first: what still needs someone comes first."""
    active = [a for a in alerts if a["status"] in BANNER_CLASSES]
    return sorted(active, key=lambda a: (a["status"] != "open", -a["id"]))


def banner_text(alert: dict[str, Any], sites: SiteBook) -> str:
    since = sites.time(alert["raised_at"], alert["site"], seconds=False)
    if alert["status"] == "acknowledged":
        return f"⚠ {alert['summary']} (since {since}; acknowledged by {alert['acked_by']})"
    return f"⚠ {alert['summary']} (since {since})"


@contextlib.contextmanager
def frame(viewer: Viewer, title: str) -> Iterator[None]:
    """The page's header, navigation and connection banner around its content. Navigation sits in the
    header on wide screens and in a drawer behind the menu button on tablets and below."""
    principal = viewer.principal
    ui.page_title(f"{title} · Switchboard")
    items = [item for item in NAVIGATION if item.visible_to(principal)]
    drawer = ui.left_drawer(value=False).props("overlay bordered").classes("bg-slate-800 xl:hidden")
    with drawer, ui.column().classes("gap-1 w-full").props("role=navigation aria-label=Pages"):
        for item in items:
            _nav_link(item, title).classes("text-lg py-3 w-full")
    with ui.header().classes("items-center bg-slate-800 gap-2 py-1"):
        ui.button(icon="menu", on_click=drawer.toggle).props("flat round color=white aria-label=Navigation") \
            .classes("xl:hidden").props("data-testid=menu")
        ui.label("Switchboard").classes("text-lg font-bold mr-4")
        with ui.row().classes("gap-1 max-xl:hidden").props("role=navigation aria-label=Pages"):
            for item in items:
                _nav_link(item, title)
        ui.space()
        ui.label(f"{principal.sub} · {', '.join(sorted(principal.roles))} · {principal.sites_text}") \
            .classes("text-sm").props("data-testid=who")
        ui.button("Sign out", on_click=lambda: ui.navigate.to(sign_out_path())) \
            .props("flat color=white dense data-testid=sign-out").classes("min-h-12")
    banner = ui.label().classes("w-full bg-red-700 text-white px-4 py-2 font-medium") \
        .props("data-testid=banner")

    def show_connection() -> None:
        text = connection_text(viewer.live.state, viewer.sites)
        banner.set_text(text)
        banner.set_visibility(bool(text))

    show_connection()
    viewer.on_change(CONNECTION, show_connection)
    alerts = ui.column().classes("w-full gap-0").props("data-testid=alerts-banner")

    def show_alerts() -> None:
        active = active_alerts(viewer.live.state.items["alerts"].values())
        alerts.clear()
        alerts.set_visibility(bool(active))
        with alerts:
            for alert in active[:MAX_BANNER_ALERTS]:
                with ui.link(target="/alerts").classes("w-full no-underline text-white px-4 py-1 "
                                                      + BANNER_CLASSES[alert["status"]]):
                    ui.label(banner_text(alert, viewer.sites)).props(f"data-testid=alert-{alert['id']}")
            if len(active) > MAX_BANNER_ALERTS:
                ui.link(f"and {len(active) - MAX_BANNER_ALERTS} more alerts", "/alerts") \
                    .classes("w-full px-4 py-1 bg-red-900 text-white")

    show_alerts()
    viewer.on_change("alerts", show_alerts)
    with ui.column().classes("w-full p-4 gap-4"):
        ui.label(title).classes("text-2xl font-semibold").props("role=heading aria-level=1")
        yield


def _nav_link(item: NavItem, title: str) -> ui.link:
    current = item.label == title
    return ui.link(item.label, item.path).classes(
        "text-white no-underline px-2 py-1 rounded" + (" bg-slate-600" if current else "")) \
        .props("aria-current=page" if current else "")


UNREACHABLE = "the backend could not be reached to tell what it offers; reload once the banner is gone"


def unavailable(viewer: Viewer, what: str, endpoint: str) -> None:
    """The honest state of a view whose endpoint this backend does not have (or cannot be asked about)."""
    if viewer.capabilities is None:
        ui.label(f"{what}: {UNREACHABLE}.").classes("text-red-700").props("data-testid=unavailable")
        return
    with ui.card().classes("bg-amber-50").props("data-testid=unavailable"):
        ui.label(f"{what} is not available on this backend yet.").classes("font-medium")
        ui.label(f"The backend does not offer {endpoint} (checked against its OpenAPI document).") \
            .classes("text-sm text-gray-600")


def report(outcome: ui.label, text: str) -> None:
    """Say how an action went, in its status line and a toast. The button pressed may have been redrawn
    by a live update while the backend answered, so the toast goes out from the line, which stays."""
    outcome.set_text(text)
    with outcome:
        ui.notify(text)


def sign_out_path() -> str:
    """Signing out from this tab: the route sends the browser's other open tabs to the sign-in page, not this
    one, which follows the route's own redirect (the identity provider's end of session)."""
    return f"/auth/logout?tab={ui.context.client.id}"
