"""Floor (for floor staff at a counter): the customers at the person's site now, in the order the queue
serves them, with their badges; the counters and who is at each; one tap calls a customer to the
person's counter. While the queue system is in fallback at the site a banner says so and the same
taps are recorded as manual steps. Kept current by the live journeys and fallbacks topics."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi.responses import RedirectResponse
from nicegui import ui

from dashboard.context import Dashboard, Viewer, current_viewer, sign_in_redirect
from dashboard.frame import UNREACHABLE, frame, page, report, unavailable
from dashboard.live_read import LiveRead, site_version
from dashboard.pages.journey import journey_link
from dashboard.steps import StepSender
from switchboard.events import CODE_PATTERN

FLOOR = "/api/v1/sites/{site}/floor"
ACTIONS = "/api/v1/journeys/{journey_id}/actions"
# an appointment this close, or past, is due: the customer should not wait behind walk-ins
APPOINTMENT_DUE_S = 10 * 60
# waits move by the minute: their text is brought up to date this often, from the clock (never a poll)
TICK_S = 15.0
COUNTER_NAME = re.compile(CODE_PATTERN)
COUNTER_RULE = "A counter's name is letters, digits, '.', '_' and '-', from a letter or digit (64 at most)"
# what the floor shows once an action took effect: the customer's stage then (None: gone from the floor)
EFFECT: dict[str, str | None] = {"call": "called", "recall": "called", "start": "in_service",
                                 "complete": None, "no_show": None, "transfer": "waiting"}
BUTTON = "min-h-12 text-base"  # touch targets of 48 px at least
STATUS_TEXT = {"pending": "sent, waiting for the queue system", "held": "held: the queue system is down",
               "sent": "sent to the queue system", "ok": "done by the queue system",
               "failed": "refused by the queue system", "recorded": "recorded by hand, on its way",
               "applied": "done (recorded by hand)", "refused": "refused", "unanswered": "no answer yet"}


def action_block(viewer: Viewer, site: str | None = None) -> str | None:
    """Why the floor's buttons cannot be pressed (at `site`), or None when they can."""
    if viewer.capabilities is None:
        return UNREACHABLE
    if not viewer.offers("POST", ACTIONS):
        return f"not available on this backend (no POST {ACTIONS})"
    if not viewer.principal.has("floor_staff", "sre"):
        return "needs the floor_staff or sre role"
    if site is not None and not viewer.principal.may_at(site, "floor_staff", "sre"):
        return f"needs the floor_staff or sre role at {site}"  # a role held at other sites only
    return None


def badges(customer: dict[str, Any], now: datetime) -> list[tuple[str, str]]:
    """The customer's badges, text and colour: priority, eligibility not passed, appointment due."""
    found = []
    if customer["priority"] == "high":
        found.append(("priority", "accent"))
    if customer["eligibility"] == "failed":
        found.append(("eligibility failed", "negative"))
    elif customer["eligibility"] == "unverified":
        found.append(("eligibility unverified", "warning"))
    slot = customer.get("slot_start")
    if slot and (datetime.fromisoformat(slot) - now).total_seconds() <= APPOINTMENT_DUE_S:
        found.append(("appointment due", "info"))
    return found


def wait_text(seconds: float) -> str:
    minutes = int(seconds // 60)
    return "just arrived" if minutes == 0 else f"waiting {minutes} min"


def wait_shown(seconds: float, target_s: float | None) -> tuple[str, bool]:
    """The wait as shown, and whether it is over the customer's service's target."""
    if target_s is None or seconds <= target_s:
        return wait_text(seconds), False
    return f"{wait_text(seconds)}, over the {target_s / 60:.0f} min target", True


def queue_fallback(floor: dict[str, Any]) -> dict[str, Any] | None:
    return next((f for f in floor["fallbacks"] if f["system"] == "queue" and f["status"] == "active"), None)


@dataclass
class Row:
    """A waiting customer's card, kept while what it shows stays the same (`signature`); its position and
    wait change as text only, so a busy floor moves cards instead of rebuilding every one."""

    signature: tuple[Any, ...]
    card: ui.card
    position: ui.label
    wait: ui.label


def _heading(text: str) -> ui.label:
    return ui.label(text).classes("text-lg font-medium").props("role=heading aria-level=2")


class FloorView:
    def __init__(self, viewer: Viewer, site: str | None) -> None:
        self.viewer = viewer
        self.sender = StepSender(viewer)
        own = viewer.principal.sites
        self.sites = sorted(viewer.sites.sites) if own is None else list(own)
        # the site asked for, else the one this person last chose (on any device), else their first
        remembered = viewer.dashboard.last_sites.get(viewer.person)
        if site in self.sites:
            viewer.dashboard.last_sites.remember(viewer.person, site)
        else:
            site = remembered if remembered in self.sites else (self.sites[0] if self.sites else None)
        self.site = site
        self.blocked = action_block(viewer, site)
        self.floor: dict[str, Any] | None = None
        self.shown_banner: tuple[Any, ...] | None = None  # what the banner and the counters were built from
        self.shown_counters: tuple[Any, ...] | None = None
        self.rows: dict[str, Row] = {}  # by journey
        self.reader = LiveRead(viewer, "The floor", self._read, self._failed)
        # (journey, action, what, how it is done) sent, not seen done yet
        self.awaiting: tuple[str, str, str, str] | None = None

    @property
    def counter(self) -> str | None:
        return self.viewer.dashboard.counters.get((self.viewer.browser_id, self.site or ""))

    def _work_at(self, counter: str) -> None:
        self.viewer.dashboard.counters[(self.viewer.browser_id, self.site or "")] = counter

    def build(self) -> None:
        self.banner = ui.column().classes("w-full gap-1").props("role=alert data-testid=fallback-banner")
        with ui.row().classes("items-end gap-4 w-full"):
            if len(self.sites) > 1:
                ui.select(self.sites, value=self.site, label="Site",
                          on_change=lambda e: ui.navigate.to(f"/floor?site={e.value}")) \
                    .classes("w-48").props("data-testid=floor-site")
            # typed where none is listed: a site without configured counters lists only those in use, and
            # none at the start of the day or while the queue system is down
            self.counter_select = ui.select([], label="My counter", with_input=True,
                                            new_value_mode="add-unique", on_change=self._counter_chosen) \
                .classes("w-40 text-lg").props("stack-label data-testid=my-counter")
            self.call_next = ui.button("Call next", icon="campaign", on_click=self._call_next) \
                .classes(f"{BUTTON} text-xl px-8").props("size=lg data-testid=call-next")
            if self.blocked:
                ui.label(f"Actions: {self.blocked}").classes("text-sm text-gray-600") \
                    .props("data-testid=blocked")
        self.outcome = ui.label().classes("text-lg font-medium") \
            .props("role=status data-testid=floor-outcome")
        _heading("Counters")
        self.counters = ui.row().classes("w-full gap-3").props("role=list aria-label=Counters")
        self.waiting_title = _heading("Waiting")
        self.waiting = ui.column().classes("w-full gap-2").props("role=list aria-label='Customers waiting'")
        self.nobody = ui.label("No one is waiting.").classes("text-gray-600")
        if self.site is None:
            ui.label("No site: this sign-in names none, and the backend lists none.").classes("text-gray-600")
            return
        site = self.site
        self.reader.read(FLOOR.format(site=site), lambda: site_version(self.viewer, site))
        self.viewer.on_change("journeys", self.reader.changed)
        self.viewer.on_change("fallbacks", self.reader.refresh)
        ui.timer(TICK_S, self.show_waits)

    def _read(self, floor: dict[str, Any]) -> None:
        self.floor = floor
        self.render()

    def _failed(self, problem: str) -> None:
        self.outcome.set_text(problem)

    def render(self) -> None:
        floor = self.floor
        if floor is None:
            return
        # the site's counters; where none are configured, those in use. A counter with a customer at it is
        # a colleague's, offered but never chosen for anyone: calling to it would send customers to them
        configured = floor["site"]["counters"]
        counters = configured or [c["counter"] for c in floor["counters"]]
        busy = {c["counter"] for c in floor["counters"] if c["journey_id"] is not None}
        free = [c for c in configured if c not in busy]
        if free and self.counter not in configured:
            self._work_at(free[0])
        kept = [self.counter] if self.counter is not None and self.counter not in counters else []
        self.counter_select.set_options(counters + kept, value=self.counter)
        waiting = [c for c in floor["customers"] if c["position"] is not None]
        self.call_next.set_enabled(self.blocked is None and bool(waiting) and self.counter is not None)
        banner = tuple((f["id"], f["system"], f["status"]) for f in floor["fallbacks"])
        if banner != self.shown_banner:
            self.shown_banner = banner
            self._build_banner(floor)
        counters_now = (tuple((c["counter"], c["journey_id"], c["stage"]) for c in floor["counters"]),
                        self.counter)
        if counters_now != self.shown_counters:
            self.shown_counters = counters_now
            self._build_counters(floor)
        self._sync_waiting(waiting)
        self.show_waits()
        self._check_awaited(floor)

    def show_waits(self) -> None:
        """Each wait as it is now: the backend's figure when it read the floor, plus the time since."""
        if self.floor is None:
            return
        since = (datetime.now(UTC) - datetime.fromisoformat(self.floor["at"])).total_seconds()
        for customer in self.floor["customers"]:
            if (row := self.rows.get(customer["journey_id"])) is not None:
                text, over = wait_shown(customer["wait_s"] + max(0.0, since), customer.get("wait_target_s"))
                row.wait.set_text(text)
                row.wait.classes(replace="text-red-800 font-bold" if over else "text-gray-700")

    def _check_awaited(self, floor: dict[str, Any]) -> None:
        """Say "done" once the floor shows what was sent, as the system that did it reported it."""
        if self.awaiting is None:
            return
        journey_id, action, what, done = self.awaiting
        now = next((c for c in floor["customers"] if c["journey_id"] == journey_id), None)
        if (now["stage"] if now else None) == EFFECT[action]:
            self.awaiting = None
            self.outcome.set_text(f"{what}: {done}")

    def _build_banner(self, floor: dict[str, Any]) -> None:
        self.banner.clear()
        fallback = queue_fallback(floor)
        with self.banner:
            if fallback is not None:
                since = self.viewer.sites.time(fallback["started_at"], self.site, seconds=False)
                with ui.card().classes("w-full bg-orange-100 border-4 border-orange-800"):
                    ui.label(f"Queue system in fallback since {since}: {fallback['reason']}") \
                        .classes("text-xl font-bold text-orange-900")
                    ui.label("Every call, start and completion here is recorded by hand in fallback "
                             f"#{fallback['id']} and replayed to the queue system when it is back.") \
                        .classes("text-orange-900")
            for other in (f for f in floor["fallbacks"] if f["system"] != "queue"):
                ui.link(f"{other['system']} is in fallback at this site: its steps are on the Fallback page",
                        "/fallback").classes("text-orange-900 font-medium")
        self.banner.set_visibility(bool(floor["fallbacks"]))

    def _build_counters(self, floor: dict[str, Any]) -> None:
        self.counters.clear()
        by_id = {c["journey_id"]: c for c in floor["customers"]}
        with self.counters:
            for counter in floor["counters"]:
                customer = by_id.get(counter["journey_id"]) if counter["journey_id"] else None
                mine = counter["counter"] == self.counter
                with ui.card().classes("min-w-48 gap-1 p-3" + (" border-4 border-blue-700" if mine else "")) \
                        .props(f"role=listitem data-testid=counter-{counter['counter']}"):
                    ui.label(f"Counter {counter['counter']}" + (" (mine)" if mine else "")) \
                        .classes("text-lg font-bold")
                    if customer is None:
                        ui.label("free").classes("text-gray-600")
                        continue
                    ui.label(f"{customer['ticket'] or customer['refs'][0]} · "
                             f"{customer['stage'].replace('_', ' ')}").classes("text-lg")
                    with ui.row().classes("gap-2"):
                        if customer["stage"] == "called":
                            self._button("Start", customer, "start", counter=counter["counter"])
                            self._button("Recall", customer, "recall", counter=counter["counter"])
                            self._button("No-show", customer, "no_show")
                        else:
                            self._button("Complete", customer, "complete", outcome="served")

    def _sync_waiting(self, waiting: list[dict[str, Any]]) -> None:
        """The waiting cards in serving order: new ones built, changed ones rebuilt, the rest moved."""
        self.waiting_title.set_text(f"Waiting ({len(waiting)})")
        self.nobody.set_visibility(not waiting)
        now = datetime.now(UTC)
        present = {c["journey_id"] for c in waiting}
        for gone in [j for j in self.rows if j not in present]:
            self.waiting.remove(self.rows.pop(gone).card)
        for index, customer in enumerate(waiting):
            signature = (customer["ticket"], customer["refs"][0], customer["queue_name"], customer["service"],
                         customer["arrived_at"], customer["slot_start"], tuple(badges(customer, now)),
                         self.counter, self.blocked)
            row = self.rows.get(customer["journey_id"])
            if row is None or row.signature != signature:
                if row is not None:
                    self.waiting.remove(row.card)
                with self.waiting:
                    row = self.rows[customer["journey_id"]] = self._customer_row(customer, now, signature)
            cards = self.waiting.default_slot.children  # in place: a card is moved only when out of order
            if index >= len(cards) or cards[index] is not row.card:
                row.card.move(self.waiting, target_index=index)
            row.position.set_text(str(customer["position"]))

    def _customer_row(self, customer: dict[str, Any], now: datetime, signature: tuple[Any, ...]) -> Row:
        name = customer["ticket"] or customer["refs"][0]
        with ui.card().classes("w-full").props(f"role=listitem data-testid=customer-{name}") as card, \
                ui.row().classes("items-center gap-4 w-full"):
            position = ui.label(str(customer["position"])).classes("text-2xl text-gray-600 w-8")
            with ui.column().classes("gap-0 grow"):
                with ui.row().classes("items-center gap-2"):
                    journey_link(customer["journey_id"], name).classes("text-2xl font-bold")
                    for text, colour in badges(customer, now):
                        ui.badge(text, color=colour).classes("text-sm")
                details = [customer["queue_name"] or customer["service"] or "",
                           f"arrived {self._time(customer['arrived_at'])}"]
                if customer.get("slot_start"):
                    details.append(f"appointment {self._time(customer['slot_start'])}")
                ui.label(" · ".join(d for d in details if d)).classes("text-gray-700")
                wait = ui.label(wait_text(customer["wait_s"])).classes("text-gray-700")
            self._button(f"Call to counter {self.counter}" if self.counter else "Call", customer, "call",
                         counter=self.counter, label=f"Call {name} to counter {self.counter}") \
                .props("size=lg")
            self._button("Transfer…", customer, "transfer", ask_queue=True).props("outline")
        return Row(signature, card, position, wait)

    def _time(self, at: str | None) -> str:
        return self.viewer.sites.time(at, self.site, seconds=False)

    def _button(self, text: str, customer: dict[str, Any], action: str, *, label: str | None = None,
                ask_queue: bool = False, **body: Any) -> ui.button:
        name = customer["ticket"] or customer["refs"][0]
        button = ui.button(text, on_click=lambda: self.act(customer, action, ask_queue=ask_queue, **body)) \
            .classes(BUTTON)
        # set, not parsed from a props string: a typed counter in the label cannot add a prop of its own
        button.props["aria-label"] = label or f"{text} {name}"
        button.props["data-testid"] = f"{action}-{name}"
        button.set_enabled(self.blocked is None and (action != "call" or self.counter is not None))
        return button

    def _counter_chosen(self) -> None:
        chosen = self.counter_select.value
        if chosen and chosen != self.counter:
            if not COUNTER_NAME.fullmatch(chosen):
                self.outcome.set_text(f"{COUNTER_RULE}; the counter is still {self.counter or 'not chosen'}")
                self.counter_select.set_options(
                    [o for o in self.counter_select.options if o != chosen], value=self.counter)
                return
            self._work_at(chosen)
            self.render()

    async def _call_next(self) -> None:
        waiting = [c for c in (self.floor or {}).get("customers", []) if c["position"] is not None]
        if waiting:
            await self.act(waiting[0], "call", counter=self.counter)

    async def _ask_queue(self, name: str) -> str | None:
        with ui.dialog() as dialog, ui.card():
            ui.label(f"Transfer {name} to which queue?").classes("font-medium")
            queue = ui.input("Queue", value="main").props("autofocus data-testid=transfer-queue")
            with ui.row():
                ui.button("Cancel", on_click=lambda: dialog.submit(None)).props("flat").classes(BUTTON)
                ui.button("Transfer", on_click=lambda: dialog.submit((queue.value or "").strip() or None)) \
                    .classes(BUTTON)
        return await dialog

    async def act(self, customer: dict[str, Any], action: str, *, ask_queue: bool = False,
                  **body: Any) -> None:
        name = customer["ticket"] or customer["refs"][0]
        if ask_queue:
            body["queue_name"] = await self._ask_queue(name)
            if body["queue_name"] is None:
                return
        what = f"{action.replace('_', ' ').capitalize()} {name}"
        sent = await self.sender.send(ACTIONS.format(journey_id=customer["journey_id"]),
                                      {"action": action, **{k: v for k, v in body.items() if v is not None}})
        text = STATUS_TEXT.get(sent.status, sent.status)
        if sent.status == "unanswered":
            text += f" ({sent.problem}); pressing it again repeats the same step, never twice"
        elif sent.problem:
            text += f": {sent.problem}"
        elif sent.answer and sent.answer.get("repeated"):
            text += " (asked before: not done again)"
        report(self.outcome, f"{what}: {text}")
        if sent.status in ("pending", "sent", "held", "recorded"):
            done = STATUS_TEXT["applied"] if sent.status == "recorded" else "done"  # by hand stays said
            self.awaiting = (customer["journey_id"], action, what, done)
            if self.floor is not None:
                self._check_awaited(self.floor)


def register(dashboard: Dashboard) -> None:
    @page("/floor")
    async def floor_page(site: str | None = None) -> RedirectResponse | None:
        viewer = await current_viewer(dashboard)
        if viewer is None:
            return sign_in_redirect()
        with frame(viewer, "Floor"):
            if not viewer.offers("GET", FLOOR):
                unavailable(viewer, "The floor", f"GET {FLOOR}")
            else:
                FloorView(viewer, site).build()
        return None
