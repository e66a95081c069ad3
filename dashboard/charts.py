"""Plotly figures as plain dicts built from live state: no figure-object validation on every render,
which is most of the cost when many tabs redraw."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from dashboard.live import FlowPoint, IntegrationPoint

FUNNEL_STAGES = ("booked", "arrived", "waiting", "called", "in_service", "completed")
_LAYOUT = {"margin": {"l": 50, "r": 20, "t": 30, "b": 40}, "height": 300, "legend": {"orientation": "h"}}


def stage_totals(flows: Iterable[dict[str, Any]]) -> dict[str, int]:
    totals = dict.fromkeys(FUNNEL_STAGES, 0)
    for flow in flows:
        for stage in FUNNEL_STAGES:
            totals[stage] += flow["stages"].get(stage, 0)
    return totals


def funnel(totals: dict[str, int]) -> dict[str, Any]:
    return {
        "data": [{"type": "funnel", "y": [s.replace("_", " ") for s in FUNNEL_STAGES],
                  "x": [totals[s] for s in FUNNEL_STAGES], "textinfo": "value"}],
        "layout": {**_LAYOUT, "title": {"text": "Journeys by stage"}},
    }


def _utc(moment: datetime) -> str:
    """A time for a plotly axis: plotly.js reads a date's wall clock and ignores its offset, so every series
    is given in UTC (sites of several zones share one axis) and the axis says so (`_UTC_AXIS`)."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat()


_UTC_AXIS = {"title": {"text": "time (UTC)"}}


def per_minute(history: dict[str, list[FlowPoint]]) -> dict[str, Any]:
    """Arrivals and completions per minute over time, one pair of lines per site."""
    data: list[dict[str, Any]] = []
    for site, points in sorted(history.items()):
        times = [_utc(p.time) for p in points]
        data.append({"type": "scatter", "mode": "lines+markers", "name": f"{site} arrivals", "x": times,
                     "y": [p.arrivals_per_min for p in points]})
        data.append({"type": "scatter", "mode": "lines+markers", "name": f"{site} completions", "x": times,
                     "y": [p.completions_per_min for p in points], "line": {"dash": "dot"}})
    return {"data": data,
            "layout": {**_LAYOUT, "title": {"text": "Per minute"}, "xaxis": _UTC_AXIS,
                       "yaxis": {"rangemode": "tozero"}}}


def percentiles(flows: list[dict[str, Any]], targets_s: list[float]) -> dict[str, Any]:
    """Wait p50/p90 and service p50 per site in minutes, each site against its own wait target."""
    sites = [f["site"] for f in flows]

    def minutes(key: str) -> list[float | None]:
        return [None if f[key] is None else round(f[key] / 60, 1) for f in flows]

    bars = [{"type": "bar", "name": name, "x": sites, "y": minutes(key)}
            for name, key in (("wait p50", "wait_p50_s"), ("wait p90", "wait_p90_s"),
                              ("service p50", "service_p50_s"))]
    target = {"type": "scatter", "mode": "markers", "name": "wait target", "x": sites,
              "y": [round(t / 60, 1) for t in targets_s],
              "marker": {"symbol": "line-ew-open", "size": 36, "color": "red", "line": {"width": 3}}}
    title = {"text": "Minutes, against each site's wait target"}
    return {"data": [*bars, target], "layout": {**_LAYOUT, "title": title, "barmode": "group"}}


def utilisation(capacities: list[dict[str, Any]]) -> dict[str, Any]:
    sites = [c["site"] for c in capacities]
    return {
        "data": [
            {"type": "bar", "name": "queue length", "x": sites, "y": [c["queue_length"] for c in capacities]},
            {"type": "scatter", "mode": "markers+lines", "name": "utilisation %", "x": sites, "yaxis": "y2",
             "y": [None if c["utilisation"] is None else round(c["utilisation"] * 100) for c in capacities]},
        ],
        "layout": {**_LAYOUT, "title": {"text": "Queue and utilisation"},
                   "yaxis2": {"overlaying": "y", "side": "right", "range": [0, 100]}},
    }



def integration_series(history: dict[str, list[IntegrationPoint]], field: str, title: str) -> dict[str, Any]:
    """One line per system of one figure over time (events per minute, invalid per minute, …)."""
    data = [{"type": "scatter", "mode": "lines", "name": system, "x": [_utc(p.time) for p in points],
             "y": [getattr(p, field) for p in points]}
            for system, points in sorted(history.items())]
    return {"data": data, "layout": {**_LAYOUT, "height": 240, "title": {"text": title}, "xaxis": _UTC_AXIS,
                                     "yaxis": {"rangemode": "tozero"}}}
