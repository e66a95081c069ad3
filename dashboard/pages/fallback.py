"""Fallback (for floor staff): per site, each system's health; Start and End fallback with a reason;
while one is active, large buttons for the manual steps of the system that is down (queue: check in,
ticket, call, start, complete…; appointments: check in by appointment, book a walk-in; core: eligibility
unverified, verify; crm: priority by hand) and the ledger of the fallback being worked on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi.responses import RedirectResponse
from nicegui import background_tasks, ui

from dashboard.backend_client import BackendError
from dashboard.context import Dashboard, Viewer, current_viewer, sign_in_redirect
from dashboard.frame import UNREACHABLE, WRAPPED_TABLE, frame, page, report
from dashboard.live_read import LiveRead, site_version
from dashboard.pages.floor import FLOOR
from dashboard.pages.integrations import STATUS_COLOUR
from dashboard.pages.journey import link_journeys_in
from dashboard.steps import StepSender

FALLBACKS = "/api/v1/fallbacks"
SYSTEMS = ("appointments", "queue", "crm", "core", "contact_center")


@dataclass(frozen=True)
class Step:
    """A manual step: its button, the inputs it takes besides the reference, whether it needs one, and
    for a step on whoever is next, the stage that person is in."""

    action: str
    label: str
    inputs: tuple[str, ...] = ()
    needs_ref: bool = True
    next_in: str | None = None


# each system's manual steps (CONTRACT section 10); the backend's `steps` of a fallback narrow them
STEPS: dict[str, tuple[Step, ...]] = {
    "queue": (Step("check_in", "Check in", needs_ref=False),
              Step("issue_ticket", "Issue ticket", next_in="arrived"),
              Step("call", "Call next", ("counter",), next_in="waiting"),
              Step("recall", "Recall", ("counter",)),
              Step("no_show", "No-show"), Step("transfer", "Transfer", ("queue_name",)),
              Step("start", "Start service", ("counter",), next_in="called"),
              Step("complete", "Complete", ("outcome",), next_in="in_service")),
    "appointments": (Step("check_in", "Check in appointment"),
                     Step("book_walk_in", "Book walk-in", ("service",), needs_ref=False)),
    "core": (Step("mark_unverified", "Eligibility unverified"),
             Step("verify", "Verify eligibility", ("result",))),
    "crm": (Step("set_priority", "Set priority", ("priority",)),),
}
# what a step may ask besides the reference: label, first value, choices (None: typed)
INPUTS: dict[str, tuple[str, str, tuple[str, ...] | None]] = {
    "counter": ("Counter", "1", None), "queue_name": ("Transfer to queue", "main", None),
    "outcome": ("Outcome", "served", ("served", "not_served")), "service": ("Service", "general", None),
    "result": ("Result", "passed", ("passed", "failed")),
    "priority": ("Priority", "high", ("high", "normal")),
}
_BOOKING_COLUMNS = [
    {"name": "slot", "label": "Slot", "field": "slot"},
    {"name": "service", "label": "Service", "field": "service", "align": "left"},
    {"name": "ref", "label": "Appointment", "field": "ref", "align": "left"},
    {"name": "check_in", "label": "", "field": "ref"},
]
# a touch-sized button per booking: checks that appointment in
_CHECK_IN_CELL = r"""
    <q-td :props="props">
      <q-btn color="primary" size="lg" no-caps label="Check in" data-testid="booking-check-in"
             :aria-label="'Check in ' + props.row.ref"
             @click="() => $parent.$emit('check_in', props.row.ref)"/>
    </q-td>"""
_LEDGER_PAGE = 500  # steps read at once
# the newest steps the ledger table holds: a long day's fallback has thousands, and the browser would hold all
LEDGER_SHOWN = 500
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


def next_in(customers: list[dict[str, Any]], stage: str) -> dict[str, Any] | None:
    """Whom a step on "the next one" applies to: the first customer in `stage` on the site's floor, which
    lists them in the order the queue serves them."""
    return next((c for c in customers if c["stage"] == stage), None)


def active_fallbacks(fallbacks: list[dict[str, Any]], site: str) -> dict[str, dict[str, Any]]:
    return {f["system"]: f for f in sorted(fallbacks, key=lambda f: f["id"])
            if f["site"] == site and f["status"] == "active"}


def step_caption(step: Step, journey: dict[str, Any] | None) -> str:
    """Whom the step applies to when no reference is typed."""
    if not step.needs_ref:
        return "new arrival"
    if step.next_in is None:
        return "by reference"
    if journey is None:
        return f"no one {step.next_in.replace('_', ' ')}"
    return journey.get("ticket") or journey["refs"][0]


def reference_label(steps: tuple[Step, ...]) -> str:
    """What the reference field takes, and what leaving it empty does for these steps."""
    empty = [text for text, applies in (("the next one", any(s.next_in for s in steps)),
                                        ("a new walk-in", any(not s.needs_ref for s in steps))) if applies]
    return "Reference" + (f" (empty: {' or '.join(empty)})" if empty else "")


def _steps(count: int) -> str:
    return "1 step" if count == 1 else f"{count} steps"


def steps_of(fallback: dict[str, Any]) -> tuple[Step, ...]:
    """The steps of the fallback's system, as far as the backend offers them for it."""
    steps = STEPS.get(fallback["system"], ())
    offered = fallback.get("steps")
    return steps if offered is None else tuple(step for step in steps if step.action in offered)


class FallbackView:
    def __init__(self, viewer: Viewer) -> None:
        self.viewer = viewer
        self.blocked = action_block(viewer)
        self.sender = StepSender(viewer)
        self.site: str | None = None
        self.working_on: str | None = None  # the system whose fallback the person chose to work on
        # (fallback id, status, site) the table shows: a new status reads it again (the replay marks steps)
        self.ledger_for: tuple[int, str, str] | None = None
        self.ledger_size = 0  # steps the shown fallback has, by the live topic
        self.ledger_resets = 0
        self.ledger_reading = False  # one reader at a time, so that no step is shown twice
        self.fallback: dict[str, Any] | None = None  # the active fallback the manual steps are recorded in
        self.steps_for: int | None = None  # the fallback the step buttons were built for
        self.next_for: dict[str, dict[str, Any] | None] = {}  # per step, the customer "next" applies to
        self.customers: list[dict[str, Any]] = []  # the site's floor, read while a step applies to "next"
        self.reader = LiveRead(viewer, "The floor", self._floor_read, self._report)
        self.shown_systems: tuple[Any, ...] | None = None  # what the system rows were built from
        self.bookings: ui.table | None = None  # an appointments fallback's list of today's bookings

    def sites(self) -> list[str]:
        state = self.viewer.live.state.items
        known = set(state["capacity"]) | set(state["flow"]) | {f["site"] for f in state["fallbacks"].values()}
        own = self.viewer.principal.sites
        return sorted(known if own is None else known | set(own))

    def build(self) -> None:
        with ui.row().classes("items-end gap-4"):
            self.site_select = ui.select([], label="Site", on_change=self._site_changed).classes("w-48") \
                .props("data-testid=fallback-site")
            self.blocked_label = ui.label().classes("text-sm text-gray-600").props("data-testid=blocked")
        self.systems = ui.column().classes("w-full gap-2")
        self.working = ui.toggle([], on_change=self._working_changed).props("data-testid=working-on")
        self.steps = ui.column().classes("w-full gap-2").props("data-testid=steps")
        self.outcome = ui.label().classes("text-lg font-medium").props('data-testid=outcome role=status')
        self.ledger_title = ui.label("Ledger: the steps taken by hand, in order").classes("font-medium")
        self.ledger = ui.table(rows=[], columns=_LEDGER_COLUMNS, row_key="seq").classes("w-full") \
            .props("dense flat wrap-cells data-testid=ledger")
        link_journeys_in(self.ledger, "ref")
        self.render()
        for topic in ("fallbacks", "integrations", "capacity"):
            self.viewer.on_change(topic, self.render)
        # journeys change several times a second: they only move whom the "next" buttons apply to
        self.viewer.on_change("journeys", self.reader.changed)

    def _site_changed(self) -> None:
        self.site = self.site_select.value
        self.render()

    def _working_changed(self) -> None:
        self.working_on = self.working.value
        self.render()

    def render(self) -> None:
        sites = self.sites()
        if self.site not in sites:
            self.site = sites[0] if sites else None
        if self.site_select.options != sites or self.site_select.value != self.site:
            self.site_select.set_options(sites, value=self.site)
        if self.site is None:
            self.steps.set_visibility(False)
            self.working.set_visibility(False)
            self.systems.clear()
            self.shown_systems = None
            with self.systems:
                ui.label("No site known yet.").classes("text-gray-500")
            return
        blocked = self.blocked_here()
        self.blocked_label.set_text(f"Actions: {blocked}" if blocked else "")
        self.blocked_label.set_visibility(blocked is not None)
        active = self.active()
        shown = tuple((system, self._health(system), active.get(system), blocked) for system in SYSTEMS)
        if shown != self.shown_systems:  # rebuilt only when a status or a fallback changed
            self.shown_systems = shown
            self.systems.clear()
            with self.systems:
                for system, health, fallback, _ in shown:
                    self._system_row(system, health, fallback)
        if self.working_on not in active:  # the oldest active fallback until the person picks another
            self.working_on = next(iter(active), None)
        # each with its count of steps: staff see a colleague's steps on another fallback arrive
        labels = {system: f"{system} · {_steps(f['ledger_size'])}" for system, f in active.items()}
        self.working.set_options(labels, value=self.working_on)
        self.working.set_visibility(len(active) > 1)
        self.fallback = active.get(self.working_on) if self.working_on else None
        self._render_steps()
        self._render_ledger(self.fallback or self._latest_fallback())

    def _render_ledger(self, fallback: dict[str, Any] | None) -> None:
        """The ledger of `fallback`: read whole when another fallback or status is shown, otherwise only the
        steps taken since it was read (a long day's ledger is not read again at every step)."""
        shown = None if fallback is None else (fallback["id"], fallback["status"], fallback["site"])
        if shown != self.ledger_for:
            self.ledger_for = shown
            self.ledger_resets += 1
            self.ledger.rows = []
            self.ledger.update()
        self.ledger_size = 0 if fallback is None else fallback["ledger_size"]
        if fallback is not None:
            size = self.ledger_size
            steps = f"the last {LEDGER_SHOWN} of {size} steps" if size > LEDGER_SHOWN else "the steps"
            self.ledger_title.set_text(f"Ledger of fallback #{fallback['id']} ({fallback['system']}):"
                                       f" {steps} taken by hand, in order")
        if self.ledger_size > self.ledger_read_to() and not self.ledger_reading:
            self.ledger_reading = True
            background_tasks.create(self.load_ledger(), name="fallback-ledger")

    def blocked_here(self) -> str | None:
        """Why the buttons cannot be pressed at the chosen site (a role held at other sites only), or None."""
        if self.blocked or self.site is None:
            return self.blocked
        if self.viewer.principal.may_at(self.site, "floor_staff", "sre"):
            return None
        return f"needs the floor_staff or sre role at {self.site}"

    def _latest_fallback(self) -> dict[str, Any] | None:
        at_site = [f for f in self.viewer.live.state.items["fallbacks"].values() if f["site"] == self.site]
        return max(at_site, key=lambda f: f["id"], default=None)

    def active(self) -> dict[str, dict[str, Any]]:
        return active_fallbacks(list(self.viewer.live.state.items["fallbacks"].values()), self.site or "")

    def _health(self, system: str) -> str:
        health = self.viewer.live.state.items["integrations"].get(system)
        return health["status"] if health else "unknown"

    def _system_row(self, system: str, status: str, fallback: dict[str, Any] | None) -> None:
        with ui.row().classes("items-center gap-4 w-full").props(f"data-testid=system-{system}"):
            ui.label(system).classes("w-40 font-medium")
            ui.badge(status, color=STATUS_COLOUR.get(status, "grey-8"))
            if fallback is None:
                ui.label("normal operation").classes("text-gray-600 w-72")
                button = ui.button("Start fallback…",
                                   on_click=lambda s=system: self.start(s)).props("color=warning")
            else:
                since = self.viewer.sites.time(fallback["started_at"], fallback["site"], seconds=False)
                ui.label(f"FALLBACK since {since} by {fallback['started_by']}: "
                         f"{fallback['reason']}").classes("text-orange-900 font-medium w-72")
                button = ui.button("End fallback…", on_click=lambda f=fallback: self.end(f))
            button.set_enabled(self.blocked_here() is None)

    def _render_steps(self) -> None:
        fallback = self.fallback
        self.steps.set_visibility(fallback is not None)
        if fallback is None:  # none to work on at this site: no floor to read, steps built anew for the next
            self.steps_for = None
            self.reader.read(None)
            return
        if self.steps_for == fallback["id"]:
            self.render_next()
            return
        self.steps_for = fallback["id"]  # rebuilt only for another fallback: what staff type survives
        self.customers = []
        site = fallback["site"]
        if any(step.next_in for step in steps_of(fallback)):  # whom "the next one" is: the floor's first
            self.reader.read(FLOOR.format(site=site), lambda: site_version(self.viewer, site))
        else:
            self.reader.read(None)
        self.steps.clear()
        with self.steps:
            self._build_steps(fallback)
        self.render_next()

    def _build_steps(self, fallback: dict[str, Any]) -> None:
        steps = steps_of(fallback)
        ui.label(f"Manual steps for {fallback['system']}, recorded in fallback #{fallback['id']}") \
            .classes("text-lg font-medium")
        inputs = {name for step in steps for name in step.inputs}
        with ui.row().classes("items-end gap-4"):
            self.ref_input = ui.input(reference_label(steps)).classes("w-96") \
                .props("data-testid=step-ref")
            self.fields: dict[str, ui.input | ui.select] = {}
            for name in (n for n in INPUTS if n in inputs):
                label, value, options = INPUTS[name]
                counters = self.viewer.sites.settings(fallback["site"]).counters
                if name == "counter" and counters:  # the site's configured counters, the first to start with
                    value, options = counters[0], tuple(counters)
                field = ui.select(list(options), value=value, label=label) if options \
                    else ui.input(label, value=value)
                self.fields[name] = field.classes("w-44").props(f"data-testid=input-{name.replace('_', '-')}")
        self.step_buttons: dict[str, tuple[ui.button, ui.label, Step]] = {}
        with ui.row().classes("gap-4"):
            for step in steps:
                with ui.column().classes("items-center gap-1"):
                    button = ui.button(step.label, on_click=lambda s=step: self.step(s)) \
                        .classes("text-xl px-8 py-6 min-w-48") \
                        .props(f"size=xl data-testid=step-{step.action}")
                    caption = ui.label().classes("text-sm text-gray-600") \
                        .props(f"data-testid=next-{step.action}")
                    self.step_buttons[step.action] = (button, caption, step)
        self.bookings = None
        check_in = next((s for s in steps if s.action == "check_in"), None)
        if fallback["system"] == "appointments" and check_in is not None:
            self._build_bookings(fallback, check_in)

    def _build_bookings(self, fallback: dict[str, Any], check_in: Step) -> None:
        """Today's bookings at the site not yet checked in, as Switchboard last heard of them: the
        appointments a check-in may name while the appointments system is down."""
        with ui.row().classes("items-center gap-4"):
            ui.label("Today's appointments not yet checked in").classes("font-medium")
            ui.button("Refresh", on_click=lambda: self.load_bookings(fallback)).props("flat no-caps")
        self.bookings = ui.table(rows=[], columns=_BOOKING_COLUMNS, row_key="ref").classes("w-full") \
            .props(f"flat {WRAPPED_TABLE} data-testid=bookings")
        # a person without the role here sees the bookings but cannot press their buttons (step() says why)
        self.bookings.add_slot("body-cell-check_in", _CHECK_IN_CELL if self.blocked_here() is None
                               else _CHECK_IN_CELL.replace("<q-btn ", "<q-btn disable "))
        self.bookings.on("check_in", lambda event: self.step(check_in, ref=event.args))
        background_tasks.create(self.load_bookings(fallback), name="fallback-bookings")

    async def _read(self, path: str, what: str, **params: Any) -> Any:
        """`GET path`, or None after saying on the page that `what` could not be read."""
        try:
            async with self.viewer.http() as http:
                return await http.get(path, **params)
        except BackendError as exc:
            self.outcome.set_text(f"{what} could not be read: {exc}")
            return None

    async def load_bookings(self, fallback: dict[str, Any]) -> None:
        page = await self._read(f"/api/v1/sites/{fallback['site']}/bookings", "Today's appointments")
        if page is None or self.bookings is None or self.steps_for != fallback["id"]:
            return  # another fallback was chosen meanwhile
        slot = self.viewer.sites.time
        self.bookings.rows = [{"slot": slot(item["slot_start"], page["site"], seconds=False),
                               "service": item["service"] or "–", "ref": item["ref"]}
                              for item in page["items"]]
        self.bookings.update()

    def _floor_read(self, floor: dict[str, Any]) -> None:
        self.customers = floor["customers"]
        self.render_next()

    def render_next(self) -> None:
        """Whom each "next" step applies to now, on its caption."""
        if self.fallback is None or self.steps_for != self.fallback["id"]:
            return
        self.next_for = {}
        for action, (button, caption, step) in self.step_buttons.items():
            journey = None if step.next_in is None else next_in(self.customers, step.next_in)
            self.next_for[action] = journey
            button.set_enabled(self.blocked_here() is None)
            caption.set_text(step_caption(step, journey))

    def ledger_read_to(self) -> int:
        """The last step read into the table; at first, the step before the newest it holds (steps are
        numbered 1, 2, 3… in each fallback)."""
        return self.ledger.rows[-1]["seq"] if self.ledger.rows else max(0, self.ledger_size - LEDGER_SHOWN)

    async def load_ledger(self) -> None:
        """Read the steps the table lacks, a page at a time, until it has the last the live topic says."""
        try:
            while self.ledger_for is not None and self.ledger_read_to() < self.ledger_size:
                resets, (fallback_id, _, site) = self.ledger_resets, self.ledger_for
                page = await self._read(f"{FALLBACKS}/{fallback_id}/ledger", "The ledger",
                                        after=self.ledger_read_to(),
                                        limit=_LEDGER_PAGE)
                if page is None:
                    return
                if resets != self.ledger_resets:
                    continue  # another fallback or status was chosen meanwhile: read that one
                if not page["items"]:
                    return
                self.ledger.rows.extend({**entry, "at": self.viewer.sites.time(entry["at"], site),
                                         "action": entry["action"].replace("_", " ")}
                                        for entry in page["items"])
                del self.ledger.rows[:-LEDGER_SHOWN]
                self.ledger.update()
        finally:
            self.ledger_reading = False

    def _report(self, text: str) -> None:
        report(self.outcome, text)

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

    def _body(self, step: Step, ref: str) -> dict[str, Any] | str:
        """The step's request, or why it cannot be sent."""
        body: dict[str, Any] = {"action": step.action}
        journey = self.next_for.get(step.action)
        if ref:
            body["ref"] = ref
        elif journey is not None:
            body["ref"] = journey["refs"][0]
        elif step.needs_ref:
            return "type the customer's reference first" if step.next_in is None \
                else f"no one {step.next_in.replace('_', ' ')}: type a reference"
        for name in step.inputs:
            value = (self.fields[name].value or "").strip()
            if not value:
                return f"fill in {name.replace('_', ' ')} first"
            body[name] = value
        return body

    async def step(self, step: Step, ref: str | None = None) -> None:
        """Send `step` for `ref` (a booking's button), else for the typed reference or whoever is next."""
        fallback = self.fallback
        if fallback is None:
            return
        what = step.label
        if (blocked := self.blocked_here()) is not None:
            self._report(f"{what}: {blocked}")
            return
        body = self._body(step, ref or (self.ref_input.value or "").strip())
        if isinstance(body, str):
            self._report(f"{what}: {body}")
            return
        sent = await self.sender.send(f"{FALLBACKS}/{fallback['id']}/actions", body)
        if sent.status == "unanswered":
            self._report(f"{what}: no answer yet ({sent.problem}). It may be in the ledger already: pressing "
                         "it again repeats the same step, which is never done twice.")
            return
        if sent.answer is None:
            self._report(f"{what} refused: {sent.problem}")
            return
        if step.action in ("check_in", "book_walk_in"):
            self.ref_input.set_value("")
            if self.bookings is not None:
                await self.load_bookings(fallback)
        result = sent.answer
        ticket = f" ticket {result['ticket']}" if result.get("ticket") else ""
        state = {"applied": "done", "recorded": "recorded, on its way"}.get(sent.status, sent.status)
        repeated = " (already done before: not done again)" if result.get("repeated") else ""
        self._report(f"{what} {state}{repeated}:{ticket} {result['ref']}"
                     + (f" is {result['stage'].replace('_', ' ')}" if result.get("stage") else ""))


def register(dashboard: Dashboard) -> None:
    @page("/fallback")
    async def fallback_page() -> RedirectResponse | None:
        viewer = await current_viewer(dashboard)
        if viewer is None:
            return sign_in_redirect()
        with frame(viewer, "Fallback"):
            FallbackView(viewer).build()
        return None
