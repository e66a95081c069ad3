"""Audit: who did what, when and why, filtered by actor, action, site and time, paged, and downloaded as
CSV (the backend's export, with the same filters)."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import RedirectResponse
from nicegui import ui

from dashboard.backend_client import BackendError
from dashboard.context import Dashboard, Viewer, current_viewer, sign_in_redirect
from dashboard.frame import WRAPPED_TABLE, frame, page
from dashboard.paging import Pages

_COLUMNS = ("at", "actor", "action", "target", "site", "reason", "result")


class AuditLog:
    def __init__(self, viewer: Viewer) -> None:
        self.viewer = viewer
        self.pages = Pages(self.show)

    def build(self) -> None:
        with ui.row().classes("items-end"):
            self.actor = ui.input("Actor").props("data-testid=audit-actor")
            self.action = ui.input("Action", placeholder="e.g. command.resend") \
                .props("data-testid=audit-action")
            self.site = ui.input("Site").props("data-testid=audit-site")
            self.since = ui.input("Since (ISO time)").props("data-testid=audit-since")
            self.until = ui.input("Until (ISO time)")
            ui.button("Filter", on_click=self.first_page)
            ui.button("Download CSV", on_click=self.download).props("outline data-testid=audit-download")
        self.result = ui.column().classes("w-full")
        ui.timer(0, self.first_page, once=True)

    def filters(self) -> dict[str, str]:
        values = (("actor", self.actor), ("action", self.action), ("site", self.site), ("since", self.since),
                  ("until", self.until))
        return {k: v.value.strip() for k, v in values if (v.value or "").strip()}

    async def first_page(self) -> None:
        await self.pages.first(self.filters())

    async def show(self) -> None:
        still = self.pages.latest.ask()
        try:
            async with self.viewer.http() as http:
                page = await http.get("/api/v1/audit", limit=50, **self.pages.params())
        except BackendError as exc:
            if still():
                self.result.clear()
                with self.result:
                    ui.label(f"The audit log could not be read: {exc}").classes("text-red-700")
            return
        if not still():
            return  # a filter or page asked for meanwhile (the page's first read, overtaken): it shows
        self.result.clear()
        with self.result:
            if not page["items"]:
                ui.label("Nothing to show.").classes("text-gray-500")
                return
            moment = self.viewer.sites.moment
            ui.table(rows=[{c: _cell(e.get(c)) for c in _COLUMNS}
                           | {"id": e["id"], "at": moment(e["at"], e.get("site"))} for e in page["items"]],
                     row_key="id",
                     columns=[{"name": c, "label": c, "field": c, "align": "left"} for c in _COLUMNS]) \
                .classes("w-full").props(f"dense flat {WRAPPED_TABLE} data-testid=audit")
            self.pages.buttons(page["next_cursor"])

    async def download(self) -> None:
        try:
            async with self.viewer.http(timeout_s=60) as backend:
                content = await backend.get_csv("/api/v1/audit", **self.filters())
        except BackendError as exc:  # the backend's own words (a bad time, a site outside the caller's)
            ui.notify(f"The export failed: {exc}", type="negative")
            return
        ui.download(content, "audit.csv", "text/csv")


def _cell(value: Any) -> str:
    return "–" if value is None else value if isinstance(value, str) else json.dumps(value, default=str)


def register(dashboard: Dashboard) -> None:
    @page("/audit")
    async def audit_page() -> RedirectResponse | None:
        viewer = await current_viewer(dashboard)
        if viewer is None:
            return sign_in_redirect()
        with frame(viewer, "Audit"):
            AuditLog(viewer).build()
        return None
