from __future__ import annotations

from typing import Annotated, Literal

from litestar import Controller, Request, get
from litestar.params import FromPath, FromQuery, QueryParameter

from backend.auth import READ, Principal
from backend.failures import services
from backend.failures.schemas import FailurePage
from backend.paging import decode_cursor, encode_cursor
from backend.resources import AppResources

FailureStatus = Literal["open", "retrying", "resolved", "discarded"]
FailureKind = Literal["invalid_event", "pii_rejected", "source_mismatch", "unauthorized_source", "apply_error",
                      "command_failed", "command_timeout"]


class FailureController(Controller):
    path = "/api/v1/failures"
    tags = ["failures"]

    @get("/", opt=READ, operation_id="listFailures")
    async def list_failures(
        self, request: Request[Principal, object, object], resources: AppResources,
        status: FromQuery[FailureStatus | None] = None, kind: FromQuery[FailureKind | None] = None, system: FromQuery[str | None] = None,
        site: FromQuery[str | None] = None, limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100, cursor: FromQuery[str | None] = None,
    ) -> FailurePage:
        sites = request.user.scope(site)
        before = decode_cursor(cursor, int)[0] if cursor else None
        async with resources.pool.acquire() as conn:
            items = await services.list_failures(conn, sites=sites, status=status, kind=kind, system=system,
                                                 limit=limit + 1, cursor=before)
        next_cursor = encode_cursor(items[limit - 1].id) if len(items) > limit else None
        return FailurePage(items=items[:limit], next_cursor=next_cursor)
