"""Capacity: a card per site and a chart; a site whose estimated wait is over the target stands out."""

from __future__ import annotations

from typing import Any

from fastapi.responses import RedirectResponse
from nicegui import ui

from dashboard import charts
from dashboard.context import Dashboard, Viewer, current_viewer, sign_in_redirect
from dashboard.frame import frame, page


def over_target(capacity: dict[str, Any], target_s: float) -> bool:
    return capacity["est_wait_s"] is not None and capacity["est_wait_s"] > target_s


def _minutes(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds / 60:.0f} min"


class CapacityView:
    def __init__(self, viewer: Viewer) -> None:
        self.viewer = viewer

    def capacities(self) -> list[dict[str, Any]]:
        items = self.viewer.live.state.items["capacity"]
        return [items[s] for s in sorted(items)]

    def build(self) -> None:
        self.cards = ui.row().classes("w-full gap-4")
        self.chart = ui.plotly(charts.utilisation([])).classes("w-full")
        self.render()
        self.viewer.on_change("capacity", self.render)

    def render(self) -> None:
        capacities = self.capacities()
        self.cards.clear()
        with self.cards:
            if not capacities:
                ui.label("No capacity reported yet.").classes("text-gray-500")
            for capacity in capacities:
                self._card(capacity)
        self.chart.update_figure(charts.utilisation(capacities))

    def _card(self, capacity: dict[str, Any]) -> None:
        late = over_target(capacity, self.viewer.sites.wait_target_s(capacity["site"],
                                                                    self.viewer.dashboard.wait_target_s))
        style = "border-2 border-red-600 bg-red-50" if late else ""
        with ui.card().classes(f"min-w-56 {style}").props(f"data-testid=capacity-{capacity['site']}"):
            with ui.row().classes("items-center"):
                ui.label(capacity["site"]).classes("text-lg font-bold")
                if late:
                    ui.badge("over wait target", color="negative")
            utilisation = capacity["utilisation"]
            for label, value in (
                ("counters open / busy", f"{capacity['counters_open']} / {capacity['counters_busy']}"),
                ("staff on duty", capacity["staff_on_duty"]),
                ("queue length", capacity["queue_length"]),
                ("estimated wait", _minutes(capacity["est_wait_s"])),
                ("utilisation", "–" if utilisation is None else f"{utilisation:.0%}"),
                # the queue system's last word: while it is down, these figures are as old as this
                ("reported at", self.viewer.sites.time(capacity["updated_at"], capacity["site"],
                                                       seconds=False)),
            ):
                with ui.row().classes("justify-between w-full"):
                    ui.label(label).classes("text-gray-500")
                    ui.label(str(value)).classes("font-medium")


def register(dashboard: Dashboard) -> None:
    @page("/capacity")
    async def capacity_page() -> RedirectResponse | None:
        viewer = await current_viewer(dashboard)
        if viewer is None:
            return sign_in_redirect()
        with frame(viewer, "Capacity"):
            CapacityView(viewer).build()
        return None
