from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.exceptions import NotFoundException, PermissionDeniedException
from litestar.params import FromQuery, JSONBody
from litestar.status_codes import HTTP_200_OK

from backend.alerts import services
from backend.alerts.announce import announce_alert
from backend.alerts.schemas import (
    AckRequest,
    Alert,
    AlertDeliveryList,
    AlertPage,
    AlertRuleList,
    StatusFilter,
)
from backend.audit.services import record
from backend.auth import READ, SRE, Principal
from backend.errors import ConflictException
from backend.paging import BigintId, PageLimit, decode_cursor, id_page
from backend.privacy import audit_actor
from backend.resources import AppResources

ACK: dict[str, Any] = {"roles": frozenset({"manager", "sre", "admin"})}


def _visible(principal: Principal, alert: Alert) -> bool:
    return alert.site is None or principal.may_see(alert.site)  # no site: it concerns every site


class AlertController(Controller):
    path = "/api/v1/alerts"
    tags = ["alerts"]

    @get("/", opt=READ, operation_id="listAlerts")
    async def list_alerts(
        self, request: Request[Principal, Any, State], resources: AppResources,
        status: FromQuery[StatusFilter | None] = None, site: FromQuery[str | None] = None,
        limit: PageLimit = 100, cursor: FromQuery[str | None] = None,
    ) -> AlertPage:
        """Newest first; `status=active` for open and acknowledged ones. Alerts of no site concern all."""
        sites = request.user.scope(site)
        before = decode_cursor(cursor, int)[0] if cursor else None
        async with resources.pool.acquire() as conn:
            items = await services.list_alerts(conn, sites=sites, status=status, limit=limit + 1,
                                               cursor=before)
        shown, next_cursor = id_page(items, limit)
        return AlertPage(items=shown, next_cursor=next_cursor)

    @get("/rules", opt=READ, operation_id="listAlertRules")
    async def list_rules(self, request: Request[Principal, Any, State],
                         resources: AppResources) -> AlertRuleList:
        """The rules in force, each with its active alerts among the reader's sites."""
        async with resources.pool.acquire() as conn:
            return AlertRuleList(items=await services.rule_states(conn, request.app.state.alert_rules,
                                                                  request.user.scope(None)))

    @get("/{alert_id:int}/deliveries", opt=SRE, operation_id="listAlertDeliveries")
    async def list_deliveries(self, request: Request[Principal, Any, State], resources: AppResources,
                              alert_id: BigintId) -> AlertDeliveryList:
        """The alert's webhooks: each receiver's status, attempts and last error (receivers are an SRE's)."""
        async with resources.pool.acquire() as conn:
            alert = await services.get_alert(conn, alert_id)
            if alert is None:
                raise NotFoundException("no such alert")
            if not _visible(request.user, alert):
                raise PermissionDeniedException("this alert is outside your sites")
            return AlertDeliveryList(items=await services.deliveries(conn, alert_id))

    @post("/{alert_id:int}/ack", opt=ACK, operation_id="acknowledgeAlert", status_code=HTTP_200_OK)
    async def acknowledge(self, request: Request[Principal, Any, State], resources: AppResources,
                          alert_id: BigintId, data: JSONBody[AckRequest | None] = None) -> Alert:
        """A person has seen the alert and is on it (audited). It still resolves by itself."""
        principal = request.user
        async with resources.pool.acquire() as conn, resources.live.after_commit(conn) as announce:
            current = await services.get_alert(conn, alert_id)
            if current is None or not _visible(principal, current):
                if current is not None:
                    raise PermissionDeniedException("this alert is outside your sites")
                raise NotFoundException("no such alert")
            if current.site is None and principal.sites is not None:
                # seen by every site's readers, but an ack answers for all of them
                raise PermissionDeniedException("an alert of every site is acknowledged by someone of every"
                                                " site")
            alert = await services.acknowledge(conn, alert_id, audit_actor(principal))
            if alert is None:
                raise ConflictException(
                    detail=f"the alert is {current.status}: only an open alert is acknowledged")
            await record(conn, principal, action="alert.ack", target=f"alert:{alert_id}",
                         reason=data.note if data else None,
                         result={"rule": alert.rule, "subject": alert.subject, "site": alert.site})
            announce_alert(announce, alert)
        return alert
