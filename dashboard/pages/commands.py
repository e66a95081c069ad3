"""The commands console: every command with its attempts, filtered by system, status, site and journey; an
SRE sends a failed one again (like Camunda Operate's retry)."""

from __future__ import annotations

from typing import Any

from fastapi.responses import RedirectResponse
from nicegui import ui

from dashboard.backend_client import BackendError
from dashboard.context import Dashboard, Viewer, current_viewer, sign_in_redirect
from dashboard.frame import frame, page
from dashboard.pages.journey import attempts_text, journey_link
from dashboard.paging import Pages
from dashboard.session import Principal

_STATUSES = ["", "pending", "held", "sent", "ok", "failed"]
PAGE = 100


def resend_offered(command: dict[str, Any], principal: Principal) -> bool:
    """As the backend decides: a command that may go again, for an SRE of its site (not one elsewhere who
    sees it by another role)."""
    return bool(command["resendable"]) and principal.may_at(command["site"], "sre")


class CommandsConsole:
    def __init__(self, viewer: Viewer) -> None:
        self.viewer = viewer
        self.pages = Pages(self.show)

    def build(self, journey: str | None) -> None:
        with ui.row().classes("items-end"):
            self.system = ui.input("System").props("data-testid=filter-system")
            self.status = ui.select(_STATUSES, value="", label="Status").classes("w-40") \
                .props("data-testid=filter-status")
            self.site = ui.input("Site").props("data-testid=filter-site")
            self.journey = ui.input("Journey id", value=journey or "").classes("w-80")
            ui.button("Show", on_click=self.search)
        self.result = ui.column().classes("w-full")
        ui.timer(0, self.search, once=True)

    async def search(self) -> None:
        fields = (("system", self.system), ("status", self.status), ("site", self.site),
                  ("journey", self.journey))
        params = {k: (v.value or "").strip() for k, v in fields}
        await self.pages.first({k: v for k, v in params.items() if v})

    async def show(self) -> None:
        still = self.pages.latest.ask()
        try:
            async with self.viewer.http() as http:
                page = await http.get("/api/v1/commands", limit=PAGE, **self.pages.params())
        except BackendError as exc:
            if still():
                self.result.clear()
                with self.result:
                    ui.label(f"Commands could not be read: {exc}").classes("text-red-700")
            return
        if not still():
            return  # a filter asked for meanwhile shows instead
        self.result.clear()
        with self.result:
            if not page["items"]:
                ui.label("No command matches.").classes("text-gray-500")
            for command in page["items"]:
                self._row(command)
            self.pages.buttons(page["next_cursor"])

    def _row(self, command: dict[str, Any]) -> None:
        with ui.card().classes("w-full py-1").props(f"data-testid=command-{command['id']}"):
            with ui.row().classes("items-center gap-4"):
                ui.label(f"{command['command']} → {command['system']}").classes("font-medium")
                ui.label(command["status"]).props("data-testid=command-status")
                ui.label(f"{command['site']} · rule {command['rule']}")
                journey_link(command["journey_id"])
                if resend_offered(command, self.viewer.principal):
                    ui.button("Resend", on_click=lambda c=command: self.resend(c)).props("dense")
            attempts = attempts_text(command, self.viewer.sites, command["site"])
            ui.label(f"Attempts: {attempts or 'none yet'}").classes("text-sm") \
                .props("data-testid=attempts")
            if command["last_error"]:
                ui.label(f"Last error: {command['last_error']}").classes("text-sm text-red-700")

    async def resend(self, command: dict[str, Any]) -> None:
        try:
            async with self.viewer.http() as http:
                await http.post(f"/api/v1/commands/{command['id']}/resend", {})
            with self.result:  # the button pressed may be redrawn meanwhile; the list stays
                ui.notify("Sent again", type="positive")
        except BackendError as exc:
            with self.result:
                ui.notify(f"Not sent again: {exc}", type="negative")
        await self.show()


def register(dashboard: Dashboard) -> None:
    @page("/commands")
    async def commands_page(journey: str | None = None) -> RedirectResponse | None:
        viewer = await current_viewer(dashboard)
        if viewer is None:
            return sign_in_redirect()
        with frame(viewer, "Commands"):
            CommandsConsole(viewer).build(journey)
        return None
