from __future__ import annotations

from typing import Any, Literal

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.params import FromQuery, JSONBody
from litestar.status_codes import HTTP_200_OK

from backend.auth import READ, SRE, Principal
from backend.failures import actions, services
from backend.failures.schemas import (
    BulkRetryRequest,
    BulkRetryResult,
    DiscardRequest,
    Failure,
    FailureKind,
    FailurePage,
    RetryRequest,
    RetryResult,
)
from backend.paging import BigintId, PageLimit, decode_cursor, encode_cursor
from backend.resources import AppResources
from backend.visibility import visible

FailureStatus = Literal["open", "retrying", "resolved", "discarded"]


class FailureController(Controller):
    path = "/api/v1/failures"
    tags = ["failures"]

    @get("/", opt=READ, operation_id="listFailures")
    async def list_failures(
        self, request: Request[Principal, Any, State], resources: AppResources,
        status: FromQuery[FailureStatus | None] = None, kind: FromQuery[FailureKind | None] = None,
        system: FromQuery[str | None] = None, site: FromQuery[str | None] = None,
        order: FromQuery[Literal["time", "impact"]] = "time",
        limit: PageLimit = 100, cursor: FromQuery[str | None] = None,
    ) -> FailurePage:
        sites = request.user.scope(site)
        position = decode_cursor(cursor, int)[0] if cursor else None
        async with resources.pool.acquire() as conn:
            items = await services.list_failures(conn, sites=sites, status=status, kind=kind, system=system,
                                                 limit=limit + 1, cursor=position, order=order)
        next_cursor = None
        if len(items) > limit:
            next_cursor = encode_cursor((position or 0) + limit if order == "impact" else items[limit - 1].id)
        return FailurePage(items=items[:limit], next_cursor=next_cursor)

    @get("/{failure_id:int}", opt=READ, operation_id="getFailure")
    async def get_failure(self, request: Request[Principal, Any, State], resources: AppResources,
                          failure_id: BigintId) -> Failure:
        async with resources.pool.acquire() as conn:
            failure = await services.get_failure(conn, failure_id)
        return visible(request.user, "failure", failure)

    @post("/{failure_id:int}/retry", opt=SRE, operation_id="retryFailure", status_code=HTTP_200_OK)
    async def retry_failure(self, request: Request[Principal, Any, State], resources: AppResources,
                            failure_id: BigintId, data: JSONBody[RetryRequest | None] = None) -> RetryResult:
        return await actions.retry(resources, request.user, failure_id, data.reason if data else None)

    @post("/retry", opt=SRE, operation_id="retryFailures", status_code=HTTP_200_OK)
    async def retry_failures(self, request: Request[Principal, Any, State], resources: AppResources,
                             data: JSONBody[BulkRetryRequest]) -> BulkRetryResult:
        return await actions.bulk_retry(resources, request.user, data.filter, dry_run=data.dry_run,
                                        selection=data.selection, reason=data.reason)

    @post("/{failure_id:int}/discard", opt=SRE, operation_id="discardFailure", status_code=HTTP_200_OK)
    async def discard_failure(self, request: Request[Principal, Any, State], resources: AppResources,
                              failure_id: BigintId, data: JSONBody[DiscardRequest]) -> RetryResult:
        return await actions.discard(resources, request.user, failure_id, data.reason)
