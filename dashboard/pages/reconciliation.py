"""Reconciliation: per system the last run (checked, drifted), the drift with ours and theirs side by
side, the repair preview before anything changes, Resolve one or all matching, and Run now."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import RedirectResponse
from nicegui import ui

from dashboard.backend_client import BackendError
from dashboard.context import Dashboard, Viewer, current_viewer, sign_in_redirect
from dashboard.frame import UNREACHABLE, frame, page, report
from dashboard.pages.fallback import SYSTEMS
from dashboard.pages.journey import link_journeys_in
from dashboard.sites import SiteBook

BASE = "/api/v1/reconciliation"
ACTIONS = ("accept_source", "push_ours", "ignore")
FILTERS = ("system", "site", "kind")
ANY = "any"
_STATUS_COLUMNS = [{"name": n, "label": label, "field": n} for n, label in (
    ("system", "System"), ("site", "Site"), ("reachable", "Reachable"), ("last_run", "Last run"),
    ("duration", "Took"), ("checked", "Checked"), ("drifted", "Drifted"), ("open_drift", "Open drift"))]
_DRIFT_COLUMNS = [{"name": n, "label": label, "field": n, "align": "left"} for n, label in (
    ("id", "#"), ("system", "System"), ("site", "Site"), ("ref", "Reference"), ("kind", "Kind"),
    ("field", "Field"),
    ("ours", "Ours"), ("theirs", "Theirs"), ("status", "Status"), ("proposed_action", "Proposed"))]


def _text(value: Any) -> str:
    return "–" if value is None else value if isinstance(value, str) else json.dumps(value, default=str)


def action_block(viewer: Viewer) -> str | None:
    if viewer.capabilities is None:
        return UNREACHABLE
    if not viewer.offers("POST", f"{BASE}/runs"):
        return f"not available on this backend (no POST {BASE}/runs)"
    if not viewer.principal.has("sre"):
        return "needs the sre or admin role"
    return None


def status_rows(entries: list[dict[str, Any]], sites: SiteBook) -> list[dict[str, Any]]:
    rows = []
    for status in sorted((e["status"] for e in entries if e.get("status")),
                         key=lambda s: (s["system"], s["site"])):
        run = status["last_run"]
        rows.append({"key": f"{status['system']}@{status['site']}", "system": status["system"],
                     "site": status["site"],
                     "reachable": "yes" if status["reachable"] else "NO",
                     "last_run": f"{sites.time(run['finished_at'] or run['started_at'], status['site'])}"
                                 f" ({run['trigger']}, {run['status']})",
                     "duration": "–" if run["duration_s"] is None else f"{run['duration_s']:.1f} s",
                     "checked": run["checked"], "drifted": run["drifted"],
                     "open_drift": status["open_drift"]})
    return rows


def open_drift(entries: list[dict[str, Any]], filters: dict[str, str]) -> list[dict[str, Any]]:
    chosen = {k: v for k, v in filters.items() if v != ANY}
    items = [e["drift"] for e in entries if e.get("drift") and e["drift"]["status"] in ("open", "repairing")]
    return sorted((d for d in items if all(d.get(k) == v for k, v in chosen.items())), key=lambda d: -d["id"])


def plan_text(plan: dict[str, Any]) -> str:
    what = f"{plan['action'].replace('_', ' ')} on {plan['ref']}"
    if plan["field"]:
        what += f" · {plan['field']}: {_text(plan['from'])} → {_text(plan['to'])}"
    if plan.get("changes"):
        what += f" (changes {plan['changes']})"
    if not plan["possible"]:
        what += f" — NOT POSSIBLE: {plan.get('note') or 'see the item'}"
    elif plan.get("note"):
        what += f" — {plan['note']}"
    return what


class ReconciliationView:
    def __init__(self, viewer: Viewer) -> None:
        self.viewer = viewer
        self.blocked = action_block(viewer)
        self.filters = dict.fromkeys(FILTERS, ANY)

    def entries(self) -> list[dict[str, Any]]:
        return list(self.viewer.live.state.items["reconciliation"].values())

    def build(self) -> None:
        with ui.row().classes("items-end gap-4"):
            self.run_system = ui.select(list(SYSTEMS), value="queue", label="System").classes("w-44")
            self.run_site = ui.input("Site").classes("w-44").props("data-testid=run-site").mark("run-site")
            run = ui.button("Run now", on_click=self.run_now).props("data-testid=run-now")
            run.set_enabled(self.blocked is None)
            if self.blocked:
                ui.label(f"Actions: {self.blocked}").classes("text-sm text-gray-600") \
                    .props("data-testid=blocked")
        self.status_table = ui.table(rows=[], columns=_STATUS_COLUMNS, row_key="key").classes("w-full") \
            .props("dense flat")
        with ui.row().classes("items-end gap-4"):
            self.selects = {name: ui.select([ANY], value=ANY, label=name.capitalize(),
                                            on_change=self._filter_changed)
                            .classes("w-40") for name in FILTERS}
            self.count = ui.label().props("data-testid=drift-count")
        with ui.row().classes("gap-2"):
            self.resolve_button = ui.button("Preview and resolve…", on_click=self.resolve_one)
            self.resolve_all_button = ui.button("Resolve all matching…", on_click=self.resolve_all)
            self.resolve_all_button.set_enabled(self.blocked is None)
        self.outcome = ui.label().classes("font-medium").props("data-testid=outcome")
        self.drift_table = ui.table(rows=[], columns=_DRIFT_COLUMNS, row_key="id", selection="single",
                                    pagination=25, on_select=self._selection_changed).classes("w-full") \
            .mark("drift-table")
        link_journeys_in(self.drift_table, "ref")
        self.render()
        self.viewer.on_change("reconciliation", self.render)

    def _filter_changed(self) -> None:
        self.filters = {name: select.value or ANY for name, select in self.selects.items()}
        self.render()

    def _selection_changed(self) -> None:
        self.resolve_button.set_enabled(self.blocked is None and self.selected() is not None)

    def selected(self) -> dict[str, Any] | None:
        if not self.drift_table.selected:
            return None
        drift_id = self.drift_table.selected[0]["id"]
        entry = self.viewer.live.state.items["reconciliation"].get(f"drift:{drift_id}")
        return entry["drift"] if entry and entry.get("drift") else None

    def render(self) -> None:
        entries = self.entries()
        self.status_table.rows = status_rows(entries, self.viewer.sites)
        self.status_table.update()
        everything = open_drift(entries, dict.fromkeys(FILTERS, ANY))
        for name, select in self.selects.items():
            options = [ANY, *sorted({d[name] for d in everything if d.get(name)})]
            if select.options != options:
                select.set_options(options, value=select.value if select.value in options else ANY)
        drift = open_drift(entries, self.filters)
        # the live topic holds the newest items only: the status rows count every one
        in_all = sum(e["status"]["open_drift"] for e in entries if e.get("status"))
        beyond = (f" among the newest {len(everything)}; {in_all} are open in all (resolving all matching"
                  " reaches them, 500 at a time)") if in_all > len(everything) else ""
        self.count.set_text(f"{len(drift)} open drift item{'s' * (len(drift) != 1)} match{beyond}")
        self.drift_table.rows = [
            {c["field"]: _text(d.get(c["field"])) if c["field"] in ("ours", "theirs", "field")
             else d.get(c["field"]) for c in _DRIFT_COLUMNS}
            | {"kind": d["kind"] + (" · CONFLICT" if d["conflict"] else ""),
               "journey_id": d.get("journey_id")}
            for d in drift]
        self.drift_table.selected = [r for r in self.drift_table.rows
                                     if any(r["id"] == s["id"] for s in self.drift_table.selected)]
        self.drift_table.update()
        self._selection_changed()

    def _report(self, text: str) -> None:
        report(self.outcome, text)

    async def run_now(self) -> None:
        site = (self.run_site.value or "").strip()
        if not site:
            self._report("Name the site to reconcile.")
            return
        try:
            async with self.viewer.http() as http:
                started = await http.post(f"{BASE}/runs", {"system": self.run_system.value, "site": site})
        except BackendError as exc:
            self._report(f"Run not started: {exc}")
            return
        run = started["run"]
        self._report(f"Run #{run['id']} of {run['system']} at {run['site']} "
                     + ("started" if started["started"] else "already in progress"))

    async def resolve_one(self) -> None:
        drift = self.selected()
        if drift is None:
            return
        with ui.dialog() as dialog, ui.card().classes("min-w-[36rem]"):
            ui.label(f"Drift #{drift['id']}: {drift['kind']} on {drift['ref']}").classes("font-medium")
            with ui.grid(columns=2).classes("w-full"):
                ui.label("Ours (Switchboard)").classes("text-gray-500")
                ui.label("Theirs (" + drift["system"] + ")").classes("text-gray-500")
                ui.label(_text(drift.get("ours")))
                ui.label(_text(drift.get("theirs")))
            action = ui.radio(list(ACTIONS), value=drift["proposed_action"]).props("inline")
            reason = ui.input("Reason (required to ignore)").classes("w-96")
            plan = ui.label().classes("text-sm").props("data-testid=plan")

            async def preview() -> None:
                try:
                    async with self.viewer.http() as http:
                        result = await http.post(f"{BASE}/drift/{drift['id']}/resolve",
                                                 {"action": action.value, "dry_run": True})
                    plan.set_text("Will do: " + plan_text(result["plan"]))
                except BackendError as exc:
                    plan.set_text(f"No preview: {exc}")

            action.on_value_change(preview)
            with ui.row():
                ui.button("Cancel", on_click=lambda: dialog.submit(None)).props("flat")
                ui.button("Resolve", on_click=lambda: dialog.submit((action.value, reason.value.strip()))) \
                    .mark("confirm-resolve")
        await preview()
        chosen = await dialog
        if not chosen:
            return
        body: dict[str, Any] = {"action": chosen[0]}
        if chosen[1]:
            body["reason"] = chosen[1]
        try:
            async with self.viewer.http() as http:
                result = await http.post(f"{BASE}/drift/{drift['id']}/resolve", body)
        except BackendError as exc:
            self._report(f"Drift #{drift['id']} not resolved: {exc}")
            return
        self._report(f"Drift #{drift['id']}: {result['outcome']} ({plan_text(result['plan'])})")

    async def resolve_all(self) -> None:
        body = {"filter": {k: v for k, v in self.filters.items() if v != ANY}}
        try:
            async with self.viewer.http() as http:
                preview = await http.post(f"{BASE}/drift/preview", body)
        except BackendError as exc:
            self._report(f"Resolve all could not be previewed: {exc}")
            return
        with ui.dialog() as dialog, ui.card().classes("min-w-[40rem]"):
            planned = len(preview["plans"])
            oldest = f"; the oldest {planned} are planned here" if planned < preview["matched"] else ""
            ui.label(f"{preview['matched']} open drift items match{oldest}; {preview['acting']} can be"
                     f" resolved with their proposed action:").props("data-testid=resolve-all-count")
            with ui.column().classes("gap-0 text-sm max-h-96 overflow-auto"):
                for each in preview["plans"]:
                    ui.label(plan_text(each))
            with ui.row():
                ui.button("Cancel", on_click=lambda: dialog.submit(False)).props("flat")
                ui.button(f"Resolve {preview['acting']}", on_click=lambda: dialog.submit(True)) \
                    .set_enabled(preview["acting"] > 0)
        if not await dialog:
            return
        try:
            async with self.viewer.http() as http:
                result = await http.post(f"{BASE}/drift/resolve", {"selection": preview["selection"]})
        except BackendError as exc:
            self._report(f"Resolve all refused: {exc}")
            return
        self._report(f"Resolve all: {result['acted']} acted on")


def register(dashboard: Dashboard) -> None:
    @page("/reconciliation")
    async def reconciliation_page() -> RedirectResponse | None:
        viewer = await current_viewer(dashboard)
        if viewer is None:
            return sign_in_redirect()
        with frame(viewer, "Reconciliation"):
            ReconciliationView(viewer).build()
        return None
