"""Flow: journeys by stage, arrivals and completions per minute, wait and service times against the
target, and the latest journey changes — for one site or across all of them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi.responses import RedirectResponse
from nicegui import ui

from dashboard import charts
from dashboard.backend_client import BackendError
from dashboard.context import Dashboard, Viewer, current_viewer, sign_in_redirect
from dashboard.frame import frame, page
from dashboard.live import FlowPoint, seed_history
from dashboard.pages.journey import link_journeys_in

ALL_SITES = "all sites"
# per site from the backend (within target: the last hour's calls; rates: the last day's ended journeys)
SHARES = {"within_target": "Served within target", "no_show_rate": "No-shows",
          "cancellation_rate": "Cancelled"}


def mean_share(flows: list[dict[str, Any]], field: str) -> float | None:
    """Across the shown sites, the mean of those that have the figure (an older backend has none)."""
    values = [f[field] for f in flows if f.get(field) is not None]
    return sum(values) / len(values) if values else None


def percent(share: float | None) -> str:
    return "–" if share is None else f"{share * 100:.0f}%"
HISTORY = "/api/v1/flow/history"


async def load_history(viewer: Viewer) -> None:
    """The last hour from the backend, once per page open, so the chart never starts empty."""
    if not viewer.offers("GET", HISTORY):
        return
    try:
        async with viewer.http() as http:
            body = await http.get(HISTORY)
    except BackendError:
        return  # the chart then starts from what arrives live, as before
    for site in body["items"]:
        seed_history(viewer.live.state.flow_history, site["site"], [
            FlowPoint(datetime.fromisoformat(p["minute"]), p["arrivals_per_min"], p["completions_per_min"])
            for p in site["points"]])


class FlowView:
    def __init__(self, viewer: Viewer) -> None:
        self.viewer = viewer
        self.site = ALL_SITES

    def flows(self) -> list[dict[str, Any]]:
        items = self.viewer.live.state.items["flow"]
        flows = [items[s] for s in sorted(items)]
        return flows if self.site == ALL_SITES else [f for f in flows if f["site"] == self.site]

    def build(self) -> None:
        self.site_select = ui.select([ALL_SITES], value=ALL_SITES, label="Site",
                                     on_change=self._site_changed).classes("w-48").props("data-testid=site")
        with ui.row().classes("gap-6"):
            self.counts = {stage: self._count(stage) for stage in charts.FUNNEL_STAGES}
        with ui.row().classes("gap-6"):
            self.shares = {field: self._share(label, field) for field, label in SHARES.items()}
        with ui.grid(columns=2).classes("w-full"):
            self.funnel = ui.plotly(charts.funnel(charts.stage_totals([])))
            self.per_minute = ui.plotly(charts.per_minute({}))
            self.percentiles = ui.plotly(charts.percentiles([], []))
        ui.label("Latest journey changes").classes("font-medium")
        self.latest = ui.table(rows=[], row_key="seq", columns=[
            {"name": "time", "label": "Updated", "field": "time"},
            {"name": "site", "label": "Site", "field": "site"},
            {"name": "stage", "label": "Stage", "field": "stage"},
            {"name": "refs", "label": "References", "field": "refs", "align": "left"},
        ]).classes("w-full").props("dense flat")
        link_journeys_in(self.latest, "refs")
        self.render_flow()
        self.render_latest()
        self.viewer.on_change("flow", self.render_flow)
        self.viewer.on_change("journeys", self.render_latest)

    @staticmethod
    def _count(stage: str) -> ui.label:
        with ui.card().classes("items-center min-w-28"):
            ui.label(stage.replace("_", " ")).classes("text-sm text-gray-500")
            return ui.label("0").classes("text-3xl font-bold").props(f"data-testid=count-{stage}")

    @staticmethod
    def _share(label: str, field: str) -> ui.label:
        with ui.card().classes("items-center min-w-40"):
            ui.label(label).classes("text-sm text-gray-500")
            return ui.label("–").classes("text-2xl font-bold").props(f"data-testid=share-{field}")

    def _site_changed(self) -> None:
        self.site = self.site_select.value or ALL_SITES
        self.render_flow()

    def render_flow(self) -> None:
        sites = sorted(self.viewer.live.state.items["flow"])
        if self.site_select.options != [ALL_SITES, *sites]:
            self.site_select.set_options([ALL_SITES, *sites], value=self.site)
        flows = self.flows()
        totals = charts.stage_totals(flows)
        for stage, label in self.counts.items():
            label.set_text(str(totals[stage]))
        for field, label in self.shares.items():
            label.set_text(percent(mean_share(flows, field)))
        self.funnel.update_figure(charts.funnel(totals))
        # the history is the process's: show only the sites this viewer's own flow topic has
        history = self.viewer.live.state.flow_history
        shown = {site: list(history[site]) for site in sites
                 if site in history and self.site in (ALL_SITES, site)}
        self.per_minute.update_figure(charts.per_minute(shown))
        default_s = self.viewer.dashboard.wait_target_s
        targets = [self.viewer.sites.wait_target_s(f["site"], default_s) for f in flows]
        self.percentiles.update_figure(charts.percentiles(flows, targets))

    def render_latest(self) -> None:
        latest = self.viewer.live.state.latest_journeys
        self.latest.rows = [
            {"seq": seq, "time": self.viewer.sites.time(j["updated_at"], j["site"]), "site": j["site"],
             "stage": j["stage"].replace("_", " "),
             "refs": ", ".join(j["refs"]), "journey_id": j["id"]}
            for seq, j in latest if self.site in (ALL_SITES, j["site"])
        ]
        self.latest.update()


def register(dashboard: Dashboard) -> None:
    @page("/")
    async def flow_page() -> RedirectResponse | None:
        viewer = await current_viewer(dashboard)
        if viewer is None:
            return sign_in_redirect()
        await load_history(viewer)
        with frame(viewer, "Flow"):
            FlowView(viewer).build()
        return None
