"""Alerts: what is active now (live), each with who acknowledged it or an Acknowledge button for a manager
or an SRE; and the history, newest first, with how long each alert lasted — what Grafana's alert list and
Svix's message log give their users, for Switchboard's own rules."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi.responses import RedirectResponse
from nicegui import ui

from dashboard.backend_client import BackendError
from dashboard.context import Dashboard, Viewer, current_viewer, sign_in_redirect
from dashboard.frame import active_alerts, frame, page, unavailable
from dashboard.session import Principal
from dashboard.sites import SiteBook

LIST = "/api/v1/alerts"
ACK = ("POST", "/api/v1/alerts/{alert_id}/ack")
ACK_ROLES = ("manager", "sre")
EVERY_SITE_ACK = "an alert of every site is acknowledged by someone of every site"
DELIVERIES = ("GET", "/api/v1/alerts/{alert_id}/deliveries")
RULES = "/api/v1/alerts/rules"
HISTORY_ROWS = 200

_HISTORY_COLUMNS: list[dict[str, Any]] = [
    {"name": "id", "label": "#", "field": "id"},
    {"name": "status", "label": "Status", "field": "status"},
    {"name": "rule", "label": "Rule", "field": "rule"},
    {"name": "site", "label": "Site", "field": "site"},
    {"name": "summary", "label": "What", "field": "summary", "align": "left"},
    {"name": "raised_at", "label": "Raised", "field": "raised_at"},
    {"name": "lasted", "label": "Lasted", "field": "lasted"},
    {"name": "acked_by", "label": "Acknowledged by", "field": "acked_by"},
]


def lasted(alert: dict[str, Any]) -> str:
    if not alert.get("resolved_at"):
        return "ongoing"
    seconds = (datetime.fromisoformat(alert["resolved_at"]) - datetime.fromisoformat(alert["raised_at"])) \
        .total_seconds()
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def settings_text(settings: dict[str, float]) -> str:
    return ", ".join(f"{name.replace('_', ' ')} {value:g}" for name, value in settings.items())


def history_row(alert: dict[str, Any], sites: SiteBook) -> dict[str, Any]:
    return {**alert, "site": alert["site"] or "every site",
            "raised_at": sites.moment(alert["raised_at"], alert["site"]), "lasted": lasted(alert),
            "acked_by": alert["acked_by"] or "–"}


def ack_refusal(alert: dict[str, Any], principal: Principal, *, offered: bool) -> str | None:
    """Why `principal` may not acknowledge `alert` (the backend's rules), or None."""
    if not (principal.has(*ACK_ROLES) and offered):
        return "only a manager or an SRE acknowledges an alert"
    if alert["site"] is None and principal.sites_for(*ACK_ROLES) is not None:
        return EVERY_SITE_ACK  # an alert of no site concerns, and its ack answers for, every site
    if not principal.may_at(alert["site"], *ACK_ROLES):  # seen there by another role of theirs
        return f"only a manager or an SRE of {alert['site']} acknowledges its alerts"
    return None


class AlertsView:
    def __init__(self, viewer: Viewer) -> None:
        self.viewer = viewer
        self.offered = viewer.offers(*ACK)
        self.known: dict[int, dict[str, Any]] = {}  # the history by id: read once, then kept live
        self.rules: ui.table | None = None

    async def build(self) -> None:
        ui.label("Active").classes("text-lg font-medium")
        self.active = ui.column().classes("w-full gap-2").props("data-testid=active-alerts")
        if self.viewer.offers("GET", RULES):
            ui.label("Rules").classes("text-lg font-medium")
            self.rules = rules = ui.table(rows=[], row_key="name", columns=[
                {"name": c, "label": c.capitalize(), "field": c, "align": "left"}
                for c in ("name", "kind", "settings", "active")]) \
                .classes("w-full").props("dense flat data-testid=rules")
            await self.load_rules(rules)
        ui.label("History").classes("text-lg font-medium")
        self.history = ui.table(rows=[], columns=_HISTORY_COLUMNS, row_key="id") \
            .classes("w-full").props("dense flat data-testid=alert-history")
        if self.viewer.principal.has("sre") and self.viewer.offers(*DELIVERIES):
            ui.label("Select an alert to see its webhook deliveries.").classes("text-sm text-gray-500")
            self.history.on("rowClick", lambda e: self.show_deliveries(e.args[1]["id"]))
        self.deliveries = ui.column().classes("w-full").props("data-testid=deliveries")
        await self.load_history()
        self.render_active()
        self.viewer.on_change("alerts", self.render_active)

    def render_active(self) -> None:
        live = list(self.viewer.live.state.items["alerts"].values())
        self.known.update((a["id"], a) for a in live)
        self.render_history()
        active = active_alerts(live)
        if self.rules is not None:  # each rule's count of active alerts follows the live topic
            for row in self.rules.rows:
                row["active"] = sum(a["rule"] == row["name"] for a in active)
            self.rules.update()
        self.active.clear()
        with self.active:
            if not active:
                ui.label("No active alerts for your sites.").classes("text-gray-500") \
                    .props("data-testid=none")
            for alert in active:
                self._card(alert)

    def _card(self, alert: dict[str, Any]) -> None:
        open_ = alert["status"] == "open"
        with ui.card().classes("w-full " + ("bg-red-50" if open_ else "bg-amber-50")) \
                .props(f"data-testid=active-{alert['id']}"), ui.row().classes("w-full items-center"):
            with ui.column().classes("gap-0 grow"):
                ui.label(alert["summary"]).classes("font-medium")
                ui.label(f"{alert['rule']} · {alert['site'] or 'every site'} · raised"
                         f" {self.viewer.sites.moment(alert['raised_at'], alert['site'])}"
                         + ("" if open_ else f" · acknowledged by {alert['acked_by']}")) \
                    .classes("text-sm text-gray-600")
            if open_:
                button = ui.button("Acknowledge", on_click=lambda a=alert: self.acknowledge(a)) \
                    .props(f"data-testid=ack-{alert['id']}")
                if why := ack_refusal(alert, self.viewer.principal, offered=self.offered):
                    button.disable()
                    button.props(f'title="{why}"')

    async def acknowledge(self, alert: dict[str, Any]) -> None:
        # the live update may redraw the cards (and this button) before the answer: notify from the list
        try:
            async with self.viewer.http() as http:
                acknowledged = await http.post(f"{LIST}/{alert['id']}/ack", {})
        except BackendError as exc:
            with self.active:
                ui.notify(f"Not acknowledged: {exc}", type="negative")
            return
        with self.active:
            ui.notify("Acknowledged", type="positive")
        self.known[acknowledged["id"]] = acknowledged
        self.render_history()

    async def show_deliveries(self, alert_id: int) -> None:
        """Each receiver's status, attempts and last error, as Svix shows a message's attempts."""
        try:
            async with self.viewer.http() as http:
                items = (await http.get(f"{LIST}/{alert_id}/deliveries"))["items"]
        except BackendError as exc:
            with self.deliveries:
                ui.notify(f"Deliveries could not be read: {exc}", type="negative")
            return
        self.deliveries.clear()
        with self.deliveries:
            ui.label(f"Webhook deliveries of alert #{alert_id}").classes("font-medium")
            if not items:
                ui.label("None: no alert webhooks are configured (SWITCHBOARD_ALERT_WEBHOOKS).") \
                    .classes("text-gray-500")
                return
            # two receivers on one host are shown alike (their paths hidden): rows keyed by place
            ui.table(rows=[{**d, "key": n, "last_error": d["last_error"] or "–"}
                           for n, d in enumerate(items)], row_key="key", columns=[
                {"name": c, "label": c.replace("_", " ").capitalize(), "field": c}
                for c in ("event", "target", "status", "attempts", "last_error", "next_at", "delivered_at")
            ]).classes("w-full").props("dense flat")

    async def load_rules(self, table: ui.table) -> None:
        try:
            async with self.viewer.http() as http:
                items = (await http.get(RULES))["items"]
        except BackendError as exc:
            ui.notify(f"Alert rules could not be read: {exc}", type="negative")
            return
        table.rows = [{**r, "kind": r["kind"].replace("_", " "), "settings": settings_text(r["settings"])}
                      for r in items]
        table.update()

    async def load_history(self) -> None:
        try:
            async with self.viewer.http() as http:
                body = await http.get(LIST, limit=HISTORY_ROWS)
        except BackendError as exc:
            ui.notify(f"Alert history could not be read: {exc}", type="negative")
            return
        self.known.update((a["id"], a) for a in body["items"])
        self.render_history()

    def render_history(self) -> None:
        newest = sorted(self.known, reverse=True)[:HISTORY_ROWS]
        self.history.rows = [history_row(self.known[i], self.viewer.sites) for i in newest]
        self.history.update()


def register(dashboard: Dashboard) -> None:
    @page("/alerts")
    async def alerts_page() -> RedirectResponse | None:
        viewer = await current_viewer(dashboard)
        if viewer is None:
            return sign_in_redirect()
        with frame(viewer, "Alerts"):
            if not viewer.offers("GET", LIST):
                unavailable(viewer, "Alerts", f"GET {LIST}")
            else:
                await AlertsView(viewer).build()
        return None
