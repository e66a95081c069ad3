"""One journey: its fields, event timeline, the commands sent for it with their attempts, its failures and
its drift (like a workflow's event history in Temporal's UI)."""

from __future__ import annotations

from typing import Any

from fastapi.responses import RedirectResponse
from nicegui import ui

from dashboard.backend_client import BackendError
from dashboard.context import Dashboard, current_viewer, sign_in_redirect
from dashboard.frame import WRAPPED_TABLE, frame, page
from dashboard.sites import SiteBook

_TIMES = ("slot_start", "updated_at")  # shown in the site's zone
_FIELDS = ("site", "stage", "refs", "service", "slot_start", "priority", "eligibility", "counter", "ticket",
           "updated_at")


def journey_link(journey_id: str, text: str | None = None) -> ui.link:
    """The one way every page links a journey to this page."""
    return ui.link(text or str(journey_id)[:8], f"/journeys/{journey_id}").props("data-testid=journey-link")


def link_journeys_in(table: ui.table, column: str) -> None:
    """A table's `column` links to journeys: by the row's `journey_id`, else a search of its `ref`."""
    table.add_slot(f"body-cell-{column}", r"""
        <q-td :props="props">
          <a v-if="props.row.journey_id" :href="'/journeys/' + props.row.journey_id"
             data-testid="journey-link">{{ props.value }}</a>
          <a v-else-if="props.row.ref" :href="'/journeys?q=' + encodeURIComponent(props.row.ref)"
             data-testid="journey-link">{{ props.value }}</a>
          <span v-else>{{ props.value }}</span>
        </q-td>""")


def attempts_text(command: dict[str, Any], sites: SiteBook, site: str) -> str:
    """Each send of the command: its number, time (in the site's zone) and the answer it got."""
    return "; ".join(f"#{a['attempt']} {sites.moment(a['sent_at'], site)} {a['answer'] or 'no answer'}"
                     + (f" ({a['error']})" if a["error"] else "") for a in command["attempt_history"])


def _table(rows: list[dict[str, Any]], columns: tuple[str, ...], testid: str) -> None:
    if not rows:
        ui.label("None.").classes("text-gray-500").props(f"data-testid={testid}")
        return
    ui.table(rows=[{c: "–" if r.get(c) is None else str(r.get(c)) for c in columns} | {"_k": i}
                   for i, r in enumerate(rows)], row_key="_k",
             columns=[{"name": c, "label": c.replace("_", " "), "field": c, "align": "left"}
                      for c in columns]) \
        .classes("w-full").props(f"dense flat {WRAPPED_TABLE} data-testid={testid}")


def _not_counted(scope: str | None, site: str) -> str:
    """Why an event in the timeline changed nothing: its connector spoke for another site only."""
    return "" if scope is None or scope == site else f"sent for {scope} only: not counted at {site}"


def show_journey(journey: dict[str, Any], sites: SiteBook) -> None:
    """The journey's fields, timeline, commands, failures and drift; times in the journey's site's zone."""
    site = journey["site"]
    with ui.card().classes("w-full").props("data-testid=journey"):
        ui.label(f"Journey {journey['id']}").classes("font-medium")
        with ui.grid(columns=2).classes("gap-x-6"):
            for name in _FIELDS:
                value = sites.moment(journey.get(name), site) if name in _TIMES and journey.get(name) \
                    else journey.get(name)
                ui.label(name.replace("_", " ")).classes("text-gray-500")
                ui.label("–" if value in (None, [])
                         else ", ".join(value) if isinstance(value, list) else str(value))
    ui.label("Timeline").classes("font-medium")
    if journey.get("earlier_events"):
        ui.label(f"Its newest {len(journey['timeline'])} events; earlier ones are left out.") \
            .classes("text-sm text-gray-500")
    _table([e | {"time": sites.moment(e["time"], site), "applied_at": sites.moment(e["applied_at"], site),
                 "note": _not_counted(e.get("scope"), site)}
            for e in journey["timeline"]], ("time", "type", "source", "applied_at", "note"), "timeline")
    ui.label("Commands").classes("font-medium")
    _table([c | {"attempt_history": attempts_text(c, sites, site)} for c in journey.get("commands", [])],
           ("command", "system", "rule", "status", "attempts", "attempt_history", "last_error"), "commands")
    ui.label("Failures").classes("font-medium")
    _table([f | {"last_at": sites.moment(f.get("last_at"), site)} for f in journey.get("failures", [])],
           ("id", "kind", "status", "system", "reason", "last_at"), "failures")
    ui.label("Drift").classes("font-medium")
    _table(journey.get("drift", []), ("id", "system", "kind", "field", "ours", "theirs", "status"), "drift")


def register(dashboard: Dashboard) -> None:
    @page("/journeys/{journey_id}")
    async def journey_page(journey_id: str) -> RedirectResponse | None:
        viewer = await current_viewer(dashboard)
        if viewer is None:
            return sign_in_redirect()
        with frame(viewer, "Journey"):
            try:
                async with viewer.http() as http:
                    journey = await http.get(f"/api/v1/journeys/{journey_id}")
            except BackendError as exc:
                ui.label(f"This journey could not be read: {exc}").classes("text-red-700")
                return None
            show_journey(journey, viewer.sites)
        return None
