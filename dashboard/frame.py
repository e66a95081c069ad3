"""The layout every page shares: navigation that follows the viewer's role, who is signed in, and
the connection banner that says when the live connection is lost and since when."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from nicegui import ui

from dashboard.context import Viewer
from dashboard.live import CONNECTION, LiveState
from dashboard.session import Principal


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
    NavItem("Capacity", "/capacity", "groups"),
    NavItem("Journeys", "/journeys", "search"),
    NavItem("Commands", "/commands", "send"),
    NavItem("Failures", "/failures", "error_outline"),
    NavItem("Integrations", "/integrations", "hub"),
    NavItem("Reconciliation", "/reconciliation", "compare_arrows"),
    NavItem("Fallback", "/fallback", "back_hand"),
    NavItem("Rules", "/rules", "rule"),
    NavItem("Audit", "/audit", "policy", frozenset({"sre", "admin"})),
)


def connection_text(state: LiveState) -> str:
    """Empty while connected; otherwise what is wrong and since when."""
    if state.ended:
        return f"Live updates stopped: {state.ended}."
    if state.connected:
        return ""
    if state.lost_since is None:
        return "Connecting to the backend…"
    return (f"Connection to the backend lost since {state.lost_since:%H:%M:%S} UTC; what you see may be out"
            " of "
            f"date. Reconnecting (attempt {state.attempts})…")


@contextlib.contextmanager
def frame(viewer: Viewer, title: str) -> Iterator[None]:
    principal = viewer.principal
    ui.page_title(f"{title} · Switchboard")
    with ui.header().classes("items-center bg-slate-800 gap-2 py-1"):
        ui.label("Switchboard").classes("text-lg font-bold mr-4")
        for item in NAVIGATION:
            if item.visible_to(principal):
                ui.link(item.label, item.path).classes(
                    "text-white no-underline px-2 py-1 rounded"
                    + (" bg-slate-600" if item.label == title else ""))
        ui.space()
        ui.label(f"{principal.sub} · {', '.join(sorted(principal.roles))} · {principal.sites_text}") \
            .classes("text-sm").props("data-testid=who")
        ui.button("Sign out", on_click=lambda: _sign_out(viewer)).props("flat color=white dense")
    banner = ui.label().classes("w-full bg-red-700 text-white px-4 py-2 font-medium") \
        .props("data-testid=banner")

    def show_connection() -> None:
        text = connection_text(viewer.live.state)
        banner.set_text(text)
        banner.set_visibility(bool(text))

    show_connection()
    viewer.on_change(CONNECTION, show_connection)
    with ui.column().classes("w-full p-4 gap-4"):
        ui.label(title).classes("text-2xl font-semibold")
        yield


def _sign_out(viewer: Viewer) -> None:
    viewer.dashboard.sessions.sign_out(viewer.browser_id)
    ui.navigate.to("/signin")


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
