"""Failures: the open failures matching the filters, those holding up customers first (read from the
backend, again whenever the live topic says a failure changed); the redacted payload on demand; Retry,
Retry all matching (count shown before confirming) and Discard with a reason when the backend offers
them and the viewer's role allows — otherwise the buttons stay disabled and say why."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from fastapi.responses import RedirectResponse
from nicegui import ui

from dashboard.backend_client import BackendError
from dashboard.context import Dashboard, Viewer, current_viewer, sign_in_redirect
from dashboard.frame import UNREACHABLE, frame, page, report
from dashboard.live_read import LiveRead
from dashboard.pages.journey import link_journeys_in
from dashboard.session import Principal

ACTIVE = ("open", "retrying")
FAILURES = "/api/v1/failures"
# the open failures the page shows: the live topic holds only the most recent, so they are read from the
# backend, in its impact order, whenever the topic says a failure changed
SHOWN = 200
FILTERS = ("kind", "system", "site")
ANY = "any"
RETRY_ONE = ("POST", "/api/v1/failures/{failure_id}/retry")
RETRY_MANY = ("POST", "/api/v1/failures/retry")
# refused for who sent them: the backend never retries these (CONTRACT section 9), only discards them
UNRETRYABLE_KINDS = frozenset({"unauthorized_source", "source_mismatch"})
UNRETRYABLE_WHY = "refused for who sent it: never retried, only discarded"
DISCARD = ("POST", "/api/v1/failures/{failure_id}/discard")

_COLUMNS: list[dict[str, Any]] = [
    {"name": "id", "label": "#", "field": "id", "sortable": True},
    {"name": "kind", "label": "Kind", "field": "kind", "sortable": True},
    {"name": "system", "label": "System", "field": "system", "sortable": True},
    {"name": "site", "label": "Site", "field": "site", "sortable": True},
    {"name": "status", "label": "Status", "field": "status"},
    {"name": "impact", "label": "Journey", "field": "impact"},
    {"name": "attempts", "label": "Attempts", "field": "attempts"},
    {"name": "last_at", "label": "Last", "field": "last_at", "sortable": True},
    {"name": "reason", "label": "Reason", "field": "reason", "classes": "max-w-md truncate"},
]


def failures_path(filters: dict[str, str]) -> str:
    """The open failures matching every chosen filter, those touching customers most first (the backend's
    impact order: customers in the building, then upcoming appointments, then the most recent)."""
    chosen = {k: v for k, v in filters.items() if v != ANY}
    return f"{FAILURES}?{urlencode({'status': 'open', 'order': 'impact', 'limit': SHOWN, **chosen})}"


def sender_note(sites: list[str]) -> str:
    """Why a retry of this failure counts for some sites only (docs/security.md, "A connector speaks for its
    sites alone")."""
    named = ", ".join(sites)
    return f"Sent by a connector limited to {named}: a retry applies it for {named} alone."


def count_text(shown: int, more: bool) -> str:
    if more:
        return (f"The {shown} open failures touching customers most are shown; more match "
                "(Retry all matching counts them all)")
    return f"{shown} open failure{'s' * (shown != 1)} match"


def action_block(viewer: Viewer, operation: tuple[str, str]) -> str | None:
    """Why an action cannot be pressed, or None when it can."""
    if viewer.capabilities is None:
        return UNREACHABLE
    if not viewer.offers(*operation):
        return f"not available on this backend yet (no {operation[0]} {operation[1]})"
    if not viewer.principal.may_act_on_failures:
        return "needs the sre or admin role"
    return None


def site_block(failure: dict[str, Any], principal: Principal) -> str | None:
    """Why `principal` may not act on this failure where it is (the backend's rule), or None: seeing it by
    another role held there is not enough."""
    if principal.may_at(failure["site"], "sre"):
        return None
    return f"needs the sre role at {failure['site'] or 'every site'}"


class FailuresView:
    def __init__(self, viewer: Viewer) -> None:
        self.viewer = viewer
        self.filters = dict.fromkeys(FILTERS, ANY)
        self.shown: list[dict[str, Any]] | None = None  # the backend's answer for the filters; None: not yet
        self.more = False  # more match than are shown
        self.reader = LiveRead(viewer, "The open failures", self._read, self._report)

    def _read(self, page: dict[str, Any]) -> None:
        self.shown, self.more = page["items"], page["next_cursor"] is not None
        self.render()

    def _read_again(self) -> None:
        self.reader.read(failures_path(self.filters), lambda: self.viewer.live.position("failures"))

    def build(self) -> None:
        with ui.row().classes("items-end gap-4"):
            self.selects = {
                name: ui.select([ANY], value=ANY, label=name.capitalize(), on_change=self._filter_changed)
                .classes("w-44").props(f"data-testid=filter-{name}")
                for name in FILTERS
            }
            self.count = ui.label().props("data-testid=failure-count")
        with ui.row().classes("gap-2 items-center"):
            self.payload_button = ui.button("Show payload", on_click=self.show_payload).props("outline")
            self.retry_button = self._action("Retry", self.retry, RETRY_ONE)
            self.retry_why = ui.label().classes("text-sm text-gray-600").props("data-testid=retry-why")
            self.retry_all_button = self._action("Retry all matching…", self.retry_all, RETRY_MANY)
            self.discard_button = self._action("Discard…", self.discard, DISCARD)
        self.blocked = ui.column().classes("gap-0 text-sm text-gray-600").props("data-testid=blocked")
        with self.blocked:
            for label, operation in (("Retry", RETRY_ONE), ("Retry all", RETRY_MANY), ("Discard", DISCARD)):
                reason = action_block(self.viewer, operation)
                if reason:
                    ui.label(f"{label}: {reason}")
        self.outcome = ui.label().classes("font-medium").props("data-testid=outcome")
        self.table = ui.table(rows=[], columns=_COLUMNS, row_key="id", selection="single",
                              pagination=25, on_select=self._selection_changed).classes("w-full")
        link_journeys_in(self.table, "impact")
        self.render()
        self._read_again()
        self.viewer.on_change("failures", self.reader.changed)

    def _action(self, label: str, handler: Any, operation: tuple[str, str]) -> ui.button:
        button = ui.button(label, on_click=handler)
        button.set_enabled(action_block(self.viewer, operation) is None)
        return button

    def selected(self) -> dict[str, Any] | None:
        if not self.table.selected:
            return None
        chosen = self.table.selected[0]["id"]
        return next((f for f in self.shown or [] if f["id"] == chosen), None)

    def _filter_changed(self) -> None:
        self.filters = {name: select.value or ANY for name, select in self.selects.items()}
        self._read_again()

    def _selection_changed(self) -> None:
        failure = self.selected()
        selected = failure is not None
        unretryable = selected and failure["kind"] in UNRETRYABLE_KINDS  # type: ignore[index]
        self.payload_button.set_enabled(selected)
        not_here = site_block(failure, self.viewer.principal) if failure is not None else None
        allowed = action_block(self.viewer, RETRY_ONE) is None and not_here is None
        self.retry_button.set_enabled(selected and not unretryable and allowed)
        self.retry_why.set_text(f"Retry: {UNRETRYABLE_WHY}" if unretryable
                                else f"Retry and discard: {not_here}" if not_here else "")
        if unretryable:  # the reason on hover too
            self.retry_button.props(f'title="{UNRETRYABLE_WHY}"')
        else:
            self.retry_button.props(remove="title")
        self.discard_button.set_enabled(selected and action_block(self.viewer, DISCARD) is None
                                        and not_here is None)

    def render(self) -> None:
        shown = self.shown or []
        # the filters offer what the live topic and the last read hold, and what is chosen
        known = [f for f in self.viewer.live.state.items["failures"].values() if f["status"] in ACTIVE]
        for name, select in self.selects.items():
            options = [ANY, *sorted({f[name] for f in known + shown if f.get(name)} - {ANY}
                                    | ({self.filters[name]} - {ANY}))]
            if select.options != options:
                select.set_options(options, value=select.value if select.value in options else ANY)
        self.count.set_text("Reading the open failures…" if self.shown is None
                            else count_text(len(shown), self.more))
        self.table.rows = [{**{c["field"]: f.get(c["field"]) for c in _COLUMNS},
                            "last_at": self.viewer.sites.moment(f["last_at"], f.get("site")),
                            "impact": (f.get("impact") or {}).get("stage", "–").replace("_", " "),
                            "journey_id": (f.get("impact") or {}).get("journey_id")}
                           for f in shown]
        still_shown = {s["id"] for s in self.table.selected}
        self.table.selected = [r for r in self.table.rows if r["id"] in still_shown]
        self.table.update()
        self._selection_changed()

    def show_payload(self) -> None:
        failure = self.selected()
        if failure is None:
            return
        with ui.dialog() as dialog, ui.card().classes("min-w-[40rem]"):
            ui.label(f"Failure {failure['id']}: {failure['kind']}").classes("font-medium")
            ui.label("Stored redacted: personal fields never leave the backend.") \
                .classes("text-sm text-gray-500")
            if failure.get("sender_sites"):
                ui.label(sender_note(failure["sender_sites"])).classes("text-sm")
            ui.code(json.dumps(failure.get("payload"), indent=2, default=str),
                    language="json").classes("w-full")
            ui.button("Close", on_click=dialog.close)
        dialog.open()

    def _report(self, text: str) -> None:
        report(self.outcome, text)

    async def retry(self) -> None:
        failure = self.selected()
        if failure is None:
            return
        try:
            async with self.viewer.http() as http:
                result = await http.post(f"/api/v1/failures/{failure['id']}/retry", {})
        except BackendError as exc:
            self._report(f"Retry of failure {failure['id']} refused: {exc}")
            return
        note = f" ({result['note']})" if result.get("note") else ""
        self._report(f"Retry of failure {failure['id']}: {result['outcome'].replace('_', ' ')}{note}")

    async def retry_all(self) -> None:
        body = {"filter": {k: v for k, v in self.filters.items() if v != ANY}, "dry_run": True}
        try:
            async with self.viewer.http() as http:
                preview = await http.post("/api/v1/failures/retry", body)
        except BackendError as exc:
            self._report(f"Retry all could not be previewed: {exc}")
            return
        with ui.dialog() as dialog, ui.card():
            matched, selected = preview["matched"], preview["selected"]
            retryable = matched - preview.get("skipped", 0)
            oldest = f"the oldest {selected} of " if selected < retryable else ""
            ui.label(f"Retry {oldest}{matched} open failure{'s' * (matched != 1)} matching the filter?") \
                .props("data-testid=retry-all-count")
            if preview.get("skipped"):
                ui.label(f"{preview['skipped']} of them will be skipped: {UNRETRYABLE_WHY}.") \
                    .props("data-testid=retry-all-skipped")
            with ui.row():
                ui.button("Cancel", on_click=lambda: dialog.submit(False)).props("flat")
                ui.button(f"Retry {selected}", on_click=lambda: dialog.submit(True)).set_enabled(selected > 0)
        if not await dialog:
            return
        try:
            async with self.viewer.http() as http:
                result = await http.post("/api/v1/failures/retry", {**body, "dry_run": False,
                                                                     "selection": preview["selection"]})
        except BackendError as exc:
            self._report(f"Retry all refused: {exc}")
            return
        outcomes: dict[str, int] = {}
        for each in result["results"]:
            outcomes[each["outcome"]] = outcomes.get(each["outcome"], 0) + 1
        summary = (", ".join(f"{n} {o.replace('_', ' ')}" for o, n in sorted(outcomes.items()))
                   or "nothing to retry")
        skipped = f"; {result['skipped']} skipped ({UNRETRYABLE_WHY})" if result.get("skipped") else ""
        self._report(f"Retry all: {summary}{skipped}")

    async def discard(self) -> None:
        failure = self.selected()
        if failure is None:
            return
        with ui.dialog() as dialog, ui.card():
            ui.label(f"Discard failure {failure['id']} ({failure['kind']})?")
            reason = ui.input("Reason (required, at least 3 characters)").classes("w-96")
            with ui.row():
                ui.button("Cancel", on_click=lambda: dialog.submit(None)).props("flat")
                confirm = ui.button("Discard", color="negative",
                                    on_click=lambda: dialog.submit(reason.value.strip()))
                confirm.bind_enabled_from(reason, "value", backward=lambda v: len((v or "").strip()) >= 3)
        text = await dialog
        if not text:
            return
        try:
            async with self.viewer.http() as http:
                result = await http.post(f"/api/v1/failures/{failure['id']}/discard", {"reason": text})
        except BackendError as exc:
            self._report(f"Discard of failure {failure['id']} refused: {exc}")
            return
        self._report(f"Failure {failure['id']}: {result['outcome'].replace('_', ' ')}")


def register(dashboard: Dashboard) -> None:
    @page("/failures")
    async def failures_page() -> RedirectResponse | None:
        viewer = await current_viewer(dashboard)
        if viewer is None:
            return sign_in_redirect()
        with frame(viewer, "Failures"):
            FailuresView(viewer).build()
        return None
