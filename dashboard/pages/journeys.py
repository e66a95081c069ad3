"""Journey lookup: a reference (`queue:T-0042`) to its journey and event timeline, read on demand."""

from __future__ import annotations

from typing import Any

from fastapi.responses import RedirectResponse
from nicegui import ui

from dashboard.backend_client import BackendError
from dashboard.context import Dashboard, Viewer, current_viewer, sign_in_redirect
from dashboard.frame import frame

_FIELDS = ("site", "stage", "refs", "service", "slot_start", "priority", "eligibility", "counter", "ticket",
           "updated_at")


class JourneyLookup:
    def __init__(self, viewer: Viewer) -> None:
        self.viewer = viewer

    def build(self, ref: str | None) -> None:
        with ui.row().classes("items-end"):
            self.ref = ui.input("Reference", placeholder="system:id, e.g. queue:T-0042", value=ref or "") \
                .classes("w-80").props("data-testid=ref").on("keydown.enter", self.look_up)
            ui.button("Look up", on_click=self.look_up)
        self.result = ui.column().classes("w-full")
        if ref:
            ui.timer(0, self.look_up, once=True)

    async def look_up(self) -> None:
        ref = (self.ref.value or "").strip()
        self.result.clear()
        if not ref:
            return
        try:
            async with self.viewer.http() as http:
                page = await http.get("/api/v1/journeys", ref=ref, limit=1)
                journey = await http.get(f"/api/v1/journeys/{page['items'][0]['id']}") \
                    if page["items"] else None
        except BackendError as exc:
            with self.result:
                ui.label(f"Lookup failed: {exc}").classes("text-red-700")
            return
        with self.result:
            if journey is None:
                ui.label(f"No journey has the reference {ref}.").props("data-testid=not-found")
            else:
                self._show(journey)

    @staticmethod
    def _show(journey: dict[str, Any]) -> None:
        with ui.card().classes("w-full").props("data-testid=journey"):
            ui.label(f"Journey {journey['id']}").classes("font-medium")
            with ui.grid(columns=2).classes("gap-x-6"):
                for name in _FIELDS:
                    value = journey.get(name)
                    ui.label(name.replace("_", " ")).classes("text-gray-500")
                    ui.label("–" if value in (None, [])
                             else ", ".join(value) if isinstance(value, list) else str(value))
        ui.label("Timeline").classes("font-medium")
        ui.table(rows=[{**e, "key": f"{e['source']} {e['id']}"} for e in journey["timeline"]], row_key="key",
                 columns=[
            {"name": "time", "label": "Event time", "field": "time"},
            {"name": "type", "label": "Type", "field": "type"},
            {"name": "source", "label": "Source", "field": "source"},
            {"name": "applied_at", "label": "Applied", "field": "applied_at"},
        ]).classes("w-full").props("dense flat data-testid=timeline")


def register(dashboard: Dashboard) -> None:
    @ui.page("/journeys")
    async def journeys_page(ref: str | None = None) -> RedirectResponse | None:
        viewer = await current_viewer(dashboard)
        if viewer is None:
            return sign_in_redirect()
        with frame(viewer, "Journeys"):
            JourneyLookup(viewer).build(ref)
        return None
