from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.exceptions import ClientException
from litestar.params import FromPath, JSONBody
from litestar.response import Response
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED

from backend.auth import FLOOR, READ, Principal
from backend.resources import AppResources
from backend.sites import actions, services
from backend.sites.schemas import BookingPage, Floor, FloorAction, FloorActionAnswer, SitePage
from switchboard.events import Code


class SiteController(Controller):
    path = "/api/v1/sites"
    tags = ["floor"]

    @get("/", opt=READ, operation_id="listSites")
    async def list_sites(self, request: Request[Principal, Any, State], resources: AppResources) -> SitePage:
        """The caller's sites with their settings; for a token of every site, the configured ones and every
        site a journey reached."""
        async with resources.pool.acquire() as conn:
            return SitePage(items=await services.list_sites(conn, request.user, resources.sites))

    @get("/{site:str}/floor", opt=READ, operation_id="getFloor")
    async def get_floor(self, request: Request[Principal, Any, State], resources: AppResources,
                        site: FromPath[Code]) -> Floor:
        """The customers at the site now, at the counters and then in the order the queue serves them; the
        counters and who is at each; the fallbacks active there."""
        request.user.scope(site)  # 403 outside the caller's sites
        async with resources.pool.acquire() as conn:
            return await services.floor(conn, resources.sites.get(site))

    @get("/{site:str}/bookings", opt=READ, operation_id="listTodaysBookings")
    async def list_bookings(self, request: Request[Principal, Any, State], resources: AppResources,
                            site: FromPath[Code]) -> BookingPage:
        """Today's appointments at the site (its own day) not yet checked in, by slot: during an
        appointments fallback, whom floor staff can check in."""
        request.user.scope(site)  # 403 outside the caller's sites
        async with resources.pool.acquire() as conn:
            return await services.bookings_today(conn, resources.sites.get(site), datetime.now(UTC))


class FloorActionController(Controller):
    path = "/api/v1/journeys"
    tags = ["floor"]

    @post("/{journey_id:uuid}/actions", opt=FLOOR, operation_id="actOnCustomer")
    async def act(self, request: Request[Principal, Any, State], resources: AppResources,
                  journey_id: FromPath[UUID],
                  data: JSONBody[FloorAction]) -> Response[FloorActionAnswer]:
        """202 with the command sent to the queue system; during the queue's fallback at the site, the manual
        step: 201 applied, 202 recorded (its event on its way), 400 refused. A repeated `step_id` answers
        the first action as it stands now."""
        answer = await actions.perform(resources, request.user, journey_id, data)
        if answer.status == "refused" and answer.step is not None:
            raise ClientException(f"the {answer.action} was recorded by hand and its event refused (failure"
                                  f" {answer.step.failure_id})",
                                  extra={"answer": answer.step_id, "status": "refused",
                                         "fallback_id": answer.step.fallback_id, "seq": answer.step.seq,
                                         "failure_id": answer.step.failure_id})
        return Response(answer, status_code=HTTP_201_CREATED if answer.status == "applied"
                        else HTTP_202_ACCEPTED)
