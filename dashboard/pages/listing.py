"""Audit: shown from its list endpoint when the backend has it, and saying honestly that it is not
available when it does not."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastapi.responses import RedirectResponse
from nicegui import ui

from dashboard.backend_client import BackendError
from dashboard.context import Dashboard, Viewer, current_viewer, sign_in_redirect
from dashboard.frame import frame, unavailable


@dataclass(frozen=True)
class Listing:
    title: str
    path: str
    endpoint: str


LISTINGS = (Listing("Audit", "/audit", "/api/v1/audit"),)


def _cell(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


async def show_listing(viewer: Viewer, listing: Listing) -> None:
    if not viewer.offers("GET", listing.endpoint):
        unavailable(viewer, listing.title, f"GET {listing.endpoint}")
        return
    try:
        async with viewer.http() as http:
            body = await http.get(listing.endpoint)
    except BackendError as exc:
        ui.label(f"{listing.title} could not be read: {exc}").classes("text-red-700")
        return
    items = body.get("items", body) if isinstance(body, dict) else body
    if not items:
        ui.label("Nothing to show.").classes("text-gray-500")
        return
    columns = list(items[0])
    # cells wrap to fit the width: a region scrolling sideways is one a keyboard cannot reach
    rows = [{c: _cell(item.get(c)) for c in columns} | {"_row": i} for i, item in enumerate(items)]
    ui.table(rows=rows, row_key="_row", columns=[{"name": c, "label": c, "field": c} for c in columns]) \
        .classes("w-full") \
        .props('wrap-cells table-style="table-layout: fixed; overflow-wrap: anywhere"')


def register(dashboard: Dashboard) -> None:
    for listing in LISTINGS:
        def page(listing: Listing = listing) -> Any:
            async def listing_page() -> RedirectResponse | None:
                viewer = await current_viewer(dashboard)
                if viewer is None:
                    return sign_in_redirect()
                with frame(viewer, listing.title):
                    await show_listing(viewer, listing)
                return None
            return listing_page
        ui.page(listing.path)(page())
