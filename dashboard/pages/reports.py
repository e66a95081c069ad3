"""Reports: the daily roll-up of the viewer's sites over a week, a month (day by day) or a year (month by
month) — volumes, waits against target, no-shows and cancellations, failures and drift — and the same
rows as CSV."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

from fastapi.responses import RedirectResponse
from nicegui import ui

from dashboard.backend_client import BackendError
from dashboard.context import Dashboard, Viewer, current_viewer, sign_in_redirect
from dashboard.frame import frame, page, unavailable

DAILY = "/api/v1/reports/daily"
ALL_SITES = "all sites"
PERIODS = {"week": 7, "month": 31, "year": 366}
COUNTS = ("arrivals", "served", "no_shows", "cancellations", "failures", "drift")
# days and months as categories: plotly would otherwise draw hours between the days
_LAYOUT = {"margin": {"l": 50, "r": 50, "t": 30, "b": 40}, "height": 300, "legend": {"orientation": "h"},
           "xaxis": {"type": "category"}}


def latest_day(now: datetime, zones: list[tzinfo]) -> date:
    """The latest of the sites' own dates: each site's report days are its own, so a range ending there holds
    every site's today (the UTC date would leave out today east of UTC, and show an empty one west)."""
    return max((now.astimezone(zone).date() for zone in zones), default=now.astimezone(UTC).date())


def bucket_of(day: str, period: str) -> str:
    """A year is shown month by month; a week or a month day by day."""
    return day[:7] if period == "year" else day


def buckets(rows: list[dict[str, Any]], period: str, first: date, last: date) -> list[dict[str, Any]]:
    """Every bucket from `first` to `last` (a day without a row counts nothing), the chosen sites' rows
    summed; waits and the share within target weighted by the served."""
    days = (first + timedelta(days=n) for n in range((last - first).days + 1))
    grouped: dict[str, list[dict[str, Any]]] = {bucket_of(str(day), period): [] for day in days}
    for row in rows:
        grouped.setdefault(bucket_of(row["day"], period), []).append(row)
    out = []
    for key in sorted(grouped):
        group = grouped[key]
        entry: dict[str, Any] = {"bucket": key, **{c: sum(r[c] for r in group) for c in COUNTS}}
        for field in ("wait_p50_s", "wait_p90_s", "within_target"):
            weighted = [(r[field], max(r["served"], 1)) for r in group if r[field] is not None]
            total = sum(w for _, w in weighted)
            entry[field] = sum(v * w for v, w in weighted) / total if total else None
        ended = entry["served"] + entry["no_shows"] + entry["cancellations"]
        entry["no_show_rate"] = entry["no_shows"] / ended if ended else None
        entry["cancellation_rate"] = entry["cancellations"] / ended if ended else None
        out.append(entry)
    return out


def volumes_figure(points: list[dict[str, Any]]) -> dict[str, Any]:
    x = [p["bucket"] for p in points]
    data = [{"type": "bar", "name": name.replace("_", " "), "x": x, "y": [p[name] for p in points]}
            for name in ("arrivals", "served", "no_shows", "cancellations")]
    return {"data": data, "layout": {**_LAYOUT, "title": {"text": "Journeys"}, "barmode": "group"}}


def waits_figure(points: list[dict[str, Any]]) -> dict[str, Any]:
    x = [p["bucket"] for p in points]

    def minutes(field: str) -> list[float | None]:
        return [None if p[field] is None else round(p[field] / 60, 1) for p in points]

    def percent(field: str) -> list[float | None]:
        return [None if p[field] is None else round(p[field] * 100, 1) for p in points]

    line = {"type": "scatter", "mode": "lines+markers", "x": x}
    return {"data": [
        {**line, "name": "wait p50 (min)", "y": minutes("wait_p50_s")},
        {**line, "name": "wait p90 (min)", "y": minutes("wait_p90_s")},
        {**line, "name": "served within target %", "yaxis": "y2", "y": percent("within_target"),
         "line": {"dash": "dot"}},
    ], "layout": {**_LAYOUT, "title": {"text": "Waits and share within target"},
                  "yaxis": {"rangemode": "tozero"},
                  "yaxis2": {"overlaying": "y", "side": "right", "range": [0, 100]}}}


def rates_figure(points: list[dict[str, Any]]) -> dict[str, Any]:
    x = [p["bucket"] for p in points]
    data: list[dict[str, Any]] = [{"type": "scatter", "mode": "lines+markers", "name": label, "x": x,
             "y": [None if p[field] is None else round(p[field] * 100, 1) for p in points]}
            for label, field in (("no-show %", "no_show_rate"), ("cancelled %", "cancellation_rate"))]
    data += [{"type": "bar", "name": name, "x": x, "y": [p[name] for p in points], "yaxis": "y2",
              "opacity": 0.4} for name in ("failures", "drift")]
    return {"data": data, "layout": {**_LAYOUT, "title": {"text": "No-shows, cancellations, failures, drift"},
                                     "yaxis": {"rangemode": "tozero"},
                                     "yaxis2": {"overlaying": "y", "side": "right", "rangemode": "tozero"}}}


class ReportsView:
    def __init__(self, viewer: Viewer) -> None:
        self.viewer = viewer
        self.rows: list[dict[str, Any]] = []
        self.period = "month"
        self.site = ALL_SITES

    async def build(self) -> None:
        with ui.row().classes("items-end gap-4"):
            self.period_toggle = ui.toggle(list(PERIODS), value=self.period,
                                           on_change=self._period_changed).props("data-testid=period")
            self.site_select = ui.select([ALL_SITES], value=ALL_SITES, label="Site",
                                         on_change=self._site_changed).classes("w-48") \
                .props("data-testid=report-site")
            ui.button("Download CSV", icon="download", on_click=self.download) \
                .props("outline data-testid=csv")
        self.summary = ui.label().props("data-testid=report-summary")
        with ui.grid(columns=2).classes("w-full"):
            self.volumes = ui.plotly(volumes_figure([])).props("data-testid=chart-volumes")
            self.waits = ui.plotly(waits_figure([])).props("data-testid=chart-waits")
            self.rates = ui.plotly(rates_figure([])).props("data-testid=chart-rates")
        await self.load()

    def _range(self) -> tuple[date, date]:
        book = self.viewer.sites
        shown = list(book.sites) if self.site == ALL_SITES else [self.site]
        last = latest_day(datetime.now(UTC), [book.zone(site) for site in shown])
        return last - timedelta(days=PERIODS[self.period] - 1), last

    async def load(self) -> None:
        first, last = self._range()
        try:
            async with self.viewer.http() as http:
                body = await http.get(DAILY, **{"from": str(first), "to": str(last)})
        except BackendError as exc:
            self.summary.set_text(f"Reports could not be read: {exc}")
            return
        self.rows = body["items"]
        sites = sorted({r["site"] for r in self.rows})
        if self.site not in sites:
            self.site = ALL_SITES
        self.site_select.set_options([ALL_SITES, *sites], value=self.site)
        self.render()

    def render(self) -> None:
        chosen = [r for r in self.rows if self.site in (ALL_SITES, r["site"])]
        first, last = self._range()
        points = buckets(chosen, self.period, first, last)
        self.summary.set_text(
            f"{self.site}, {first} to {last}: {sum(p['arrivals'] for p in points)} arrivals,"
            f" {sum(p['served'] for p in points)} served, {sum(p['no_shows'] for p in points)} no-shows,"
            f" {sum(p['cancellations'] for p in points)} cancellations")
        self.volumes.update_figure(volumes_figure(points))
        self.waits.update_figure(waits_figure(points))
        self.rates.update_figure(rates_figure(points))

    async def _period_changed(self) -> None:
        self.period = self.period_toggle.value or "month"
        await self.load()

    async def _site_changed(self) -> None:
        self.site = self.site_select.value or ALL_SITES
        await self.load()  # the site's own today may be another day than all sites' latest

    async def download(self) -> None:
        first, last = self._range()
        site = None if self.site == ALL_SITES else self.site
        try:
            async with self.viewer.http() as http:
                content = await http.get_csv(DAILY, site=site, **{"from": str(first), "to": str(last)})
        except BackendError as exc:
            ui.notify(f"CSV not downloaded: {exc}", type="negative")
            return
        ui.download(content, f"switchboard-daily-{first}-{last}.csv")


def register(dashboard: Dashboard) -> None:
    @page("/reports")
    async def reports_page() -> RedirectResponse | None:
        viewer = await current_viewer(dashboard)
        if viewer is None:
            return sign_in_redirect()
        with frame(viewer, "Reports"):
            if not viewer.offers("GET", DAILY):
                unavailable(viewer, "Reports", f"GET {DAILY}")
            else:
                await ReportsView(viewer).build()
        return None
