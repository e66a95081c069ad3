"""The routing rules and the ownership map in force, read-only, with what each rule produced today."""

from __future__ import annotations

import json

from fastapi.responses import RedirectResponse
from nicegui import ui

from dashboard.backend_client import BackendError
from dashboard.context import Dashboard, current_viewer, sign_in_redirect
from dashboard.frame import WRAPPED_TABLE, frame, page


def register(dashboard: Dashboard) -> None:
    @page("/rules")
    async def rules_page() -> RedirectResponse | None:
        viewer = await current_viewer(dashboard)
        if viewer is None:
            return sign_in_redirect()
        with frame(viewer, "Rules"):
            try:
                async with viewer.http() as http:
                    rules = await http.get("/api/v1/rules")
            except BackendError as exc:
                ui.label(f"The rules could not be read: {exc}").classes("text-red-700")
                return None
            ui.label(f"{rules['file']}, version {rules['version']}").classes("text-gray-600")
            ui.table(rows=[{"name": r["name"], "when": json.dumps(r["when"]), "command": r["command"],
                            "to": r["to"], "description": r["description"], "today": r["produced_today"]}
                           for r in rules["items"]], row_key="name",
                     columns=[{"name": c, "label": c, "field": c, "align": "left"}
                              for c in ("name", "when", "command", "to", "today", "description")]) \
                .classes("w-full").props(f"dense flat {WRAPPED_TABLE} data-testid=rules")
            ui.label("Ownership: which system is the record for what").classes("font-medium")
            ui.table(rows=[{"system": o["system"], "stages": ", ".join(o["stages"]) or "–",
                            "fields": ", ".join(o["fields"]) or "–"} for o in rules["ownership"]],
                     row_key="system", columns=[{"name": c, "label": c, "field": c, "align": "left"}
                                                for c in ("system", "stages", "fields")]) \
                .classes("w-full").props(f"dense flat {WRAPPED_TABLE} data-testid=ownership")
        return None
