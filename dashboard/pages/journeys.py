"""Finding journeys: the start of any reference or ticket number, by site and stage; each opens its page."""

from __future__ import annotations

from fastapi.responses import RedirectResponse
from nicegui import ui

from dashboard.backend_client import BackendError
from dashboard.context import Dashboard, Viewer, current_viewer, sign_in_redirect
from dashboard.frame import frame, page
from dashboard.pages.journey import journey_link, show_journey
from dashboard.paging import Pages

_STAGES = ["", "open", "booked", "arrived", "waiting", "called", "in_service", "completed", "cancelled",
           "no_show"]
PAGE = 100


class JourneySearch:
    def __init__(self, viewer: Viewer) -> None:
        self.viewer = viewer
        self.pages = Pages(self.show)

    def build(self, q: str | None) -> None:
        with ui.row().classes("items-end"):
            self.q = ui.input("Reference or ticket", placeholder="e.g. queue:T-00 or T-00", value=q or "") \
                .classes("w-80").props("data-testid=search").on("keydown.enter", self.search)
            self.site = ui.input("Site").props("data-testid=search-site").on("keydown.enter", self.search)
            self.stage = ui.select(_STAGES, value="", label="Stage").classes("w-40")
            ui.button("Search", on_click=self.search)
        self.result = ui.column().classes("w-full")
        if q:
            ui.timer(0, self.search, once=True)

    async def search(self) -> None:
        wanted = (("q", self.q.value), ("site", self.site.value), ("stage", self.stage.value))
        await self.pages.first({k: v.strip() for k, v in wanted if (v or "").strip()})

    async def show(self) -> None:
        still = self.pages.latest.ask()
        try:
            async with self.viewer.http() as http:
                page = await http.get("/api/v1/journeys", limit=PAGE, **self.pages.params())
                # one match: show it at once
                only = await http.get(f"/api/v1/journeys/{page['items'][0]['id']}") \
                    if len(page["items"]) == 1 and self.pages.number == 1 else None
        except BackendError as exc:
            if still():
                self.result.clear()
                with self.result:
                    ui.label(f"Search failed: {exc}").classes("text-red-700")
            return
        if not still():
            return  # a search asked for meanwhile shows instead
        self.result.clear()
        with self.result:
            if not page["items"]:
                ui.label("No journey matches.").props("data-testid=not-found")
            for j in page["items"]:
                with ui.row().classes("gap-4 items-center").props("data-testid=found"):
                    journey_link(j["id"])
                    ui.label(", ".join(j["refs"]))
                    ticket = f" · ticket {j['ticket']}" if j["ticket"] else ""
                    ui.label(f"{j['site']} · {j['stage']}{ticket}")
            self.pages.buttons(page["next_cursor"])
            if only:
                show_journey(only, self.viewer.sites)


def register(dashboard: Dashboard) -> None:
    @page("/journeys")
    async def journeys_page(q: str | None = None, ref: str | None = None) -> RedirectResponse | None:
        viewer = await current_viewer(dashboard)
        if viewer is None:
            return sign_in_redirect()
        with frame(viewer, "Journeys"):
            JourneySearch(viewer).build(q or ref)
        return None
