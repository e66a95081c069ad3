"""Integrations (for SREs): a tile per system with its health and figures, and the figures over time,
all from the live `integrations` topic."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi.responses import RedirectResponse
from nicegui import ui

from dashboard import charts
from dashboard.context import Dashboard, Viewer, current_viewer, sign_in_redirect
from dashboard.frame import frame, page

STATUS_COLOUR = {"up": "positive", "degraded": "warning", "down": "negative"}
CHARTS = (("events_per_min", "Events per minute"), ("invalid_per_min", "Invalid per minute"),
          ("apply_latency_p99_ms", "Apply latency p99 (ms)"), ("held_commands", "Held commands"))


def age_text(at: str | None, now: datetime) -> str:
    if at is None:
        return "never"
    seconds = (now - datetime.fromisoformat(at)).total_seconds()
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


def figures(item: dict[str, Any], now: datetime) -> list[tuple[str, str]]:
    """The tile's rows: what the backend reported, `–` where it has no figure yet."""

    def number(key: str, unit: str = "", digits: int = 1) -> str:
        value = item.get(key)
        return "–" if value is None else f"{value:.{digits}f}{unit}"

    success = item.get("command_success_rate")
    pace = item.get("pace") or {}
    return [
        ("last heartbeat", age_text(item.get("last_heartbeat_at"), now)),
        ("events / min", number("events_per_min")),
        ("invalid / min", number("invalid_per_min")),
        ("command success", "–" if success is None else f"{success:.0%}"),
        ("held commands", str(item.get("held_commands", "–"))),
        ("consumer lag", str(item.get("consumer_lag", "–"))),
        ("apply latency p50 / p99", f"{number('apply_latency_p50_ms', ' ms', 0)} / "
                                    f"{number('apply_latency_p99_ms', ' ms', 0)}"),
        ("command pace", "–" if not pace else f"{pace['rate_per_min']:.0f}/min"
                                             + (f" ({pace['reason']})" if pace.get("recovering") else "")),
    ]


class IntegrationsView:
    def __init__(self, viewer: Viewer) -> None:
        self.viewer = viewer

    def build(self) -> None:
        self.tiles = ui.row().classes("w-full gap-4")
        with ui.grid(columns=2).classes("w-full"):
            self.charts = {name: ui.plotly(charts.integration_series({}, name, title))
                           for name, title in CHARTS}
        self.render()
        self.viewer.on_change("integrations", self.render)

    def render(self) -> None:
        items = self.viewer.live.state.items["integrations"]
        now = datetime.now(UTC)
        self.tiles.clear()
        with self.tiles:
            if not items:
                ui.label("No connector has reported yet.").classes("text-gray-500")
            for system in sorted(items):
                self._tile(items[system], now)
        history = {system: list(points)
                   for system, points in self.viewer.live.state.integration_history.items()}
        for (name, title), chart in zip(CHARTS, self.charts.values(), strict=True):
            chart.update_figure(charts.integration_series(history, name, title))

    def _tile(self, item: dict[str, Any], now: datetime) -> None:
        status = item["status"]
        with ui.card().classes("min-w-72").props(f"data-testid=integration-{item['system']}"):
            with ui.row().classes("items-center justify-between w-full"):
                ui.label(item["system"]).classes("text-lg font-bold")
                ui.badge(status, color=STATUS_COLOUR.get(status, "grey-8")) \
                    .props(f"data-testid=status-{item['system']}")
            ui.label(f"{item['reason']} · since {self.viewer.sites.time(item['since'])}") \
                .classes("text-sm text-gray-600")
            for label, value in figures(item, now):
                with ui.row().classes("justify-between w-full"):
                    ui.label(label).classes("text-gray-500")
                    ui.label(value).classes("font-medium")


def register(dashboard: Dashboard) -> None:
    @page("/integrations")
    async def integrations_page() -> RedirectResponse | None:
        viewer = await current_viewer(dashboard)
        if viewer is None:
            return sign_in_redirect()
        with frame(viewer, "Integrations"):
            IntegrationsView(viewer).build()
        return None
