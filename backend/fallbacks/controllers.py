from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.exceptions import ClientException
from litestar.params import FromQuery, JSONBody, QueryParameter
from litestar.response import Response
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED, HTTP_202_ACCEPTED

from backend.auth import FLOOR, READ, Principal
from backend.fallbacks import actions, services
from backend.fallbacks.schemas import (
    ActionResult,
    EndFallback,
    Fallback,
    FallbackDetail,
    FallbackPage,
    FallbackStatus,
    LedgerPage,
    ManualAction,
    StartFallback,
)
from backend.paging import BigintId, PageLimit, decode_cursor, id_page
from backend.resources import AppResources
from backend.visibility import visible

# a step's place in its ledger (an integer column)
StepSeq = Annotated[int, QueryParameter(ge=0, le=2**31 - 1)]


class FallbackController(Controller):
    path = "/api/v1/fallbacks"
    tags = ["fallbacks"]

    @get("/", opt=READ, operation_id="listFallbacks")
    async def list_fallbacks(
        self, request: Request[Principal, Any, State], resources: AppResources,
        status: FromQuery[FallbackStatus | None] = None, site: FromQuery[str | None] = None,
        limit: PageLimit = 100, cursor: FromQuery[str | None] = None,
    ) -> FallbackPage:
        sites = request.user.scope(site)
        before = decode_cursor(cursor, int)[0] if cursor else None
        async with resources.pool.acquire() as conn:
            items = await services.list_fallbacks(conn, sites=sites, status=status, limit=limit + 1,
                                                  cursor=before)
        shown, next_cursor = id_page(items, limit)
        return FallbackPage(items=shown, next_cursor=next_cursor)

    @post("/", opt=FLOOR, operation_id="startFallback", status_code=HTTP_201_CREATED)
    async def start_fallback(self, request: Request[Principal, Any, State], resources: AppResources,
                             data: JSONBody[StartFallback]) -> Fallback:
        """Staff take over a system's part by hand at a site; one active fallback per site and system
        (409)."""
        return await services.start(resources, request.user, data)

    @get("/{fallback_id:int}", opt=READ, operation_id="getFallback")
    async def get_fallback(self, request: Request[Principal, Any, State], resources: AppResources,
                           fallback_id: BigintId) -> FallbackDetail:
        """One fallback with its ledger: the manual steps in the order they were taken."""
        async with resources.pool.acquire() as conn:
            # the site is judged before the ledger is read: a caller of another site costs one row
            fallback = visible(request.user, "fallback", await services.find_fallback(conn, fallback_id))
            return await services.with_ledger(conn, fallback)

    @get("/{fallback_id:int}/ledger", opt=READ, operation_id="listFallbackLedger")
    async def list_ledger(self, request: Request[Principal, Any, State], resources: AppResources,
                          fallback_id: BigintId, after: StepSeq = 0, limit: PageLimit = 100) -> LedgerPage:
        """A fallback's steps after the step `after` (its `seq`), in the order they were taken: a reader of a
        long day's ledger asks for what it has not seen, not for the whole ledger again. `more`: steps
        follow this page."""
        async with resources.pool.acquire() as conn:
            visible(request.user, "fallback", await services.find_fallback(conn, fallback_id))
            items = await services.ledger_page(conn, fallback_id, after=after, limit=limit + 1)
        return LedgerPage(items=items[:limit], more=len(items) > limit)

    @post("/{fallback_id:int}/end", opt=FLOOR, operation_id="endFallback", status_code=HTTP_200_OK)
    async def end_fallback(self, request: Request[Principal, Any, State], resources: AppResources,
                           fallback_id: BigintId, data: JSONBody[EndFallback | None] = None) -> Fallback:
        """The fallback becomes `replaying`: what was done by hand is pushed to the system, then it is
        `ended`."""
        return await services.end(resources, request.user, fallback_id, data.reason if data else None)

    @post("/{fallback_id:int}/actions", opt=FLOOR, operation_id="performManualAction")
    async def perform_action(self, request: Request[Principal, Any, State], resources: AppResources,
                             fallback_id: BigintId, data: JSONBody[ManualAction]) -> Response[ActionResult]:
        """201 once the step's event is applied; 202 when it is recorded and still on its way to the
        journey; 400 when its event was refused. A repeated `step_id` answers with the first step as it
        stands now (`repeated`), recording nothing."""
        result = await actions.perform(resources, request.user, fallback_id, data)
        if result.status == "refused":
            failure = await resources.pool.fetchrow("SELECT kind, reason FROM failures WHERE id = $1",
                                                    result.failure_id)
            raise ClientException(f"the {result.action} event was refused ({failure['kind']}):"
                                  f" {failure['reason']}",
                                  extra={"failure_id": result.failure_id, "seq": result.seq,
                                         "status": "refused"})
        return Response(result, status_code=HTTP_201_CREATED if result.applied else HTTP_202_ACCEPTED)
