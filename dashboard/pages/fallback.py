"""Fallback (for floor staff): per site, each system's health; Start and End fallback with a reason;
while one is active, large buttons for the manual steps (check in, issue ticket, call next, start,
complete) and the ledger of what was done by hand."""

from __future__ import annotations

from typing import Any

from fastapi.responses import RedirectResponse
from nicegui import background_tasks, ui

from dashboard.backend_client import BackendError
from dashboard.context import Dashboard, Viewer, current_viewer, sign_in_redirect
from dashboard.frame import UNREACHABLE, frame
from dashboard.pages.integrations import STATUS_COLOUR

FALLBACKS = "/api/v1/fallbacks"
SYSTEMS = ("appointments", "queue", "crm", "core", "contact_center")
# each step and the stage of the journey it applies to (None: a new arrival, no journey needed)
STEPS = (("check_in", "Check in", None), ("issue_ticket", "Issue ticket", "arrived"),
         ("call", "Call next", "waiting"), ("start", "Start service", "called"),
         ("complete", "Complete", "in_service"))
_LEDGER_COLUMNS = [
    {"name": "seq", "label": "#", "field": "seq"},
    {"name": "at", "label": "Time", "field": "at"},
    {"name": "action", "label": "Step", "field": "action"},
    {"name": "ref", "label": "Reference", "field": "ref", "align": "left"},
    {"name": "actor", "label": "By", "field": "actor"},
    {"name": "replay_status", "label": "Replay", "field": "replay_status"},
]


def action_block(viewer: Viewer) -> str | None:
    """Why the fallback buttons cannot be pressed, or None when they can."""
    if viewer.capabilities is None:
        return UNREACHABLE
    if not viewer.offers("POST", FALLBACKS):
        return f"not available on this backend (no POST {FALLBACKS})"
    if not viewer.principal.has("floor_staff", "sre"):
        return "needs the floor_staff or sre role"
    return None


def next_journey(journeys: list[dict[str, Any]], site: str, stage: str) -> dict[str, Any] | None:
    """Whom a step applies to: the journey at `site` in `stage` that has been there longest."""
    waiting = [j for j in journeys if j["site"] == site and j["stage"] == stage]
    return min(waiting, key=lambda j: j["updated_at"], default=None)


def active_fallbacks(fallbacks: list[dict[str, Any]], site: str) -> dict[str, dict[str, Any]]:
    return {f["system"]: f for f in fallbacks if f["site"] == site and f["status"] == "active"}


class FallbackView:
    def __init__(self, viewer: Viewer) -> None:
        self.viewer = viewer
        self.blocked = action_block(viewer)
        self.site: str | None = None
        self.ledger_for: tuple[int, int] | None = None  # (fallback id, ledger size) the table shows
        self.fallback: dict[str, Any] | None = None  # the active fallback the manual steps are recorded in
        self.next_for: dict[str, dict[str, Any] | None] = {}  # per step, the journey it applies to
        self.shown_systems: tuple[Any, ...] | None = None  # what the system rows were built from

    def sites(self) -> list[str]:
        state = self.viewer.live.state.items
        known = set(state["capacity"]) | set(state["flow"]) | {f["site"] for f in state["fallbacks"].values()}
        own = self.viewer.principal.sites
        return sorted(known if own is None else known | set(own))

    def build(self) -> None:
        with ui.row().classes("items-end gap-4"):
            self.site_select = ui.select([], label="Site", on_change=self._site_changed).classes("w-48") \
                .props("data-testid=fallback-site")
            if self.blocked:
                ui.label(f"Actions: {self.blocked}").classes("text-sm text-gray-600") \
                    .props("data-testid=blocked")
        self.systems = ui.column().classes("w-full gap-2")
        self.steps = ui.column().classes("w-full gap-2")
        with self.steps:
            self._build_steps()
        self.outcome = ui.label().classes("text-lg font-medium").props("data-testid=outcome")
        ui.label("Ledger: the steps taken by hand, in order").classes("font-medium")
        self.ledger = ui.table(rows=[], columns=_LEDGER_COLUMNS, row_key="seq").classes("w-full") \
            .props("dense flat")
        self.render()
        for topic in ("fallbacks", "integrations", "capacity"):
            self.viewer.on_change(topic, self.render)
        # journeys change several times a second: they only move whom the step buttons call
        self.viewer.on_change("journeys", self.render_steps)

    def _site_changed(self) -> None:
        self.site = self.site_select.value
        self.render()

    def render(self) -> None:
        sites = self.sites()
        if self.site not in sites:
            self.site = sites[0] if sites else None
        if self.site_select.options != sites or self.site_select.value != self.site:
            self.site_select.set_options(sites, value=self.site)
        if self.site is None:
            self.steps.set_visibility(False)
            self.systems.clear()
            self.shown_systems = None
            with self.systems:
                ui.label("No site known yet.").classes("text-gray-500")
            return
        active = self.active()
        shown = tuple((system, self._health(system), active.get(system)) for system in SYSTEMS)
        if shown != self.shown_systems:  # rebuilt only when a status or a fallback changed
            self.shown_systems = shown
            self.systems.clear()
            with self.systems:
                for system, health, fallback in shown:
                    self._system_row(system, health, fallback)
        self._render_steps(active)
        fallback = next(iter(active.values()), None) or self._latest_fallback()
        if fallback is None:
            self.ledger.rows = []
        elif self.ledger_for != (fallback["id"], fallback["ledger_size"]):
            self.ledger_for = (fallback["id"], fallback["ledger_size"])
            background_tasks.create(self.load_ledger(fallback["id"]), name="fallback-ledger")

    def _latest_fallback(self) -> dict[str, Any] | None:
        at_site = [f for f in self.viewer.live.state.items["fallbacks"].values() if f["site"] == self.site]
        return max(at_site, key=lambda f: f["id"], default=None)

    def active(self) -> dict[str, dict[str, Any]]:
        return active_fallbacks(list(self.viewer.live.state.items["fallbacks"].values()), self.site or "")

    def _health(self, system: str) -> str:
        health = self.viewer.live.state.items["integrations"].get(system)
        return health["status"] if health else "unknown"

    def render_steps(self) -> None:
        self._render_steps(self.active())

    def _system_row(self, system: str, status: str, fallback: dict[str, Any] | None) -> None:
        with ui.row().classes("items-center gap-4 w-full").props(f"data-testid=system-{system}"):
            ui.label(system).classes("w-40 font-medium")
            ui.badge(status, color=STATUS_COLOUR.get(status, "grey-8"))
            if fallback is None:
                ui.label("normal operation").classes("text-gray-500 w-72")
                button = ui.button("Start fallback…",
                                   on_click=lambda s=system: self.start(s)).props("color=warning")
            else:
                since = self.viewer.sites.time(fallback["started_at"], fallback["site"], seconds=False)
                ui.label(f"FALLBACK since {since} by {fallback['started_by']}: "
                         f"{fallback['reason']}").classes("text-orange-800 font-medium w-72")
                button = ui.button("End fallback…", on_click=lambda f=fallback: self.end(f))
            button.set_enabled(self.blocked is None)

    def _build_steps(self) -> None:
        """Built once, so what staff type survives the re-renders live updates cause."""
        self.steps_title = ui.label().classes("text-lg font-medium")
        with ui.row().classes("items-end gap-4"):
            self.ref_input = ui.input("Appointment reference (empty: walk-in)").classes("w-80") \
                .props("data-testid=check-in-ref")
            self.counter_input = ui.input("Counter", value="1").classes("w-32").props("data-testid=counter")
        self.step_buttons: dict[str, tuple[ui.button, ui.label]] = {}
        with ui.row().classes("gap-4"):
            for action, label, _stage in STEPS:
                with ui.column().classes("items-center gap-1"):
                    button = ui.button(label, on_click=lambda a=action: self.step(a)) \
                        .classes("text-xl px-8 py-6 min-w-48").props(f"size=xl data-testid=step-{action}")
                    self.step_buttons[action] = (button, ui.label().classes("text-sm text-gray-600"))

    def _render_steps(self, active: dict[str, dict[str, Any]]) -> None:
        self.steps.set_visibility(bool(active))
        self.fallback = active.get("queue") or next(iter(active.values()), None)
        if self.fallback is None:
            return
        self.steps_title.set_text(f"Manual steps, recorded in fallback #{self.fallback['id']} "
                                  f"({self.fallback['system']})")
        journeys = list(self.viewer.live.state.items["journeys"].values())
        self.next_for = {}
        for action, _label, stage in STEPS:
            journey = None if stage is None else next_journey(journeys, self.site or "", stage)
            self.next_for[action] = journey
            button, caption = self.step_buttons[action]
            button.set_enabled(self.blocked is None and (stage is None or journey is not None))
            caption.set_text("new arrival" if stage is None else
                             journey["refs"][0] if journey else f"no one {stage.replace('_', ' ')}")

    async def load_ledger(self, fallback_id: int) -> None:
        try:
            async with self.viewer.http() as http:
                detail = await http.get(f"{FALLBACKS}/{fallback_id}")
        except BackendError as exc:
            self.outcome.set_text(f"The ledger could not be read: {exc}")
            return
        self.ledger.rows = [{**entry, "at": self.viewer.sites.time(entry["at"], detail["site"]),
                             "action": entry["action"].replace("_", " ")} for entry in detail["ledger"]]
        self.ledger.update()

    def _report(self, text: str) -> None:
        self.outcome.set_text(text)
        ui.notify(text)

    async def _reason(self, question: str, *, required: bool) -> str | None:
        with ui.dialog() as dialog, ui.card():
            ui.label(question).classes("font-medium")
            reason = ui.input("Reason" + (" (required)" if required else " (optional)")).classes("w-96") \
                .props("data-testid=reason")
            with ui.row():
                ui.button("Cancel", on_click=lambda: dialog.submit(None)).props("flat")
                confirm = ui.button("Confirm", on_click=lambda: dialog.submit(reason.value.strip()))
                if required:
                    confirm.bind_enabled_from(reason, "value", backward=lambda v: len((v or "").strip()) >= 3)
        return await dialog

    async def start(self, system: str) -> None:
        reason = await self._reason(f"Start a fallback for {system} at {self.site}?", required=True)
        if not reason:
            return
        try:
            async with self.viewer.http() as http:
                fallback = await http.post(FALLBACKS, {"site": self.site, "system": system, "reason": reason})
        except BackendError as exc:
            self._report(f"Fallback not started: {exc}")
            return
        self._report(f"Fallback #{fallback['id']} started for {system} at {fallback['site']}")

    async def end(self, fallback: dict[str, Any]) -> None:
        reason = await self._reason(f"End the fallback for {fallback['system']}? What was done by hand is "
                                    f"replayed to {fallback['system']}.", required=False)
        if reason is None:
            return
        try:
            async with self.viewer.http() as http:
                await http.post(f"{FALLBACKS}/{fallback['id']}/end", {"reason": reason} if reason else {})
        except BackendError as exc:
            self._report(f"Fallback not ended: {exc}")
            return
        self._report(f"Fallback #{fallback['id']} ended: replaying the ledger to {fallback['system']}")

    async def step(self, action: str) -> None:
        fallback, journey = self.fallback, self.next_for.get(action)
        if fallback is None:
            return
        body: dict[str, Any] = {"action": action}
        if journey is not None:
            body["ref"] = journey["refs"][0]
        elif (self.ref_input.value or "").strip():
            body["ref"] = self.ref_input.value.strip()
        if action in ("call", "start"):
            body["counter"] = (self.counter_input.value or "").strip() or "1"
        if action == "complete":
            body["outcome"] = "served"
        try:
            async with self.viewer.http() as http:
                result = await http.post(f"{FALLBACKS}/{fallback['id']}/actions", body)
        except BackendError as exc:
            self._report(f"{action.replace('_', ' ').capitalize()} refused: {exc}")
            return
        if action == "check_in":
            self.ref_input.set_value("")
        ticket = f" ticket {result['ticket']}" if result.get("ticket") else ""
        state = "done" if result["applied"] else "recorded, on its way"
        self._report(f"{action.replace('_', ' ').capitalize()} {state}:{ticket} {result['ref']}"
                     + (f" is {result['stage'].replace('_', ' ')}" if result.get("stage") else ""))


def register(dashboard: Dashboard) -> None:
    @ui.page("/fallback")
    async def fallback_page() -> RedirectResponse | None:
        viewer = await current_viewer(dashboard)
        if viewer is None:
            return sign_in_redirect()
        with frame(viewer, "Fallback"):
            FallbackView(viewer).build()
        return None
