"""Reconciliation over HTTP (CONTRACT sections 5 and 7): status per system, runs, drift items, resolve."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.exceptions import ValidationException
from litestar.params import FromQuery, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_202_ACCEPTED

from backend.audit import services as audit
from backend.auth import READ, SRE, Principal
from backend.errors import ConflictException
from backend.paging import BigintId, PageLimit, decode_cursor, id_page
from backend.privacy import acting_user
from backend.reconciliation import repair, services
from backend.reconciliation.scheduler import Reconciler
from backend.reconciliation.schemas import (
    BulkPreview,
    BulkPreviewRequest,
    BulkResolveRequest,
    BulkResolveResult,
    DriftItem,
    DriftKind,
    DriftPage,
    DriftStatus,
    ResolveRequest,
    ResolveResult,
    Run,
    RunRequest,
    RunStarted,
    StatusPage,
)
from backend.resources import AppResources
from backend.visibility import visible
from switchboard.events import RESERVED_SYSTEMS

AnyRequest = Request[Principal, Any, State]


class ReconciliationController(Controller):
    path = "/api/v1/reconciliation"
    tags = ["reconciliation"]

    @get("/", opt=READ, operation_id="reconciliationStatus")
    async def status(self, request: AnyRequest, resources: AppResources, site: FromQuery[str | None] = None,
                     system: FromQuery[str | None] = None) -> StatusPage:
        async with resources.pool.acquire() as conn:
            return StatusPage(items=await services.statuses(conn, sites=request.user.scope(site),
                                                            system=system))

    @post("/runs", opt=SRE, operation_id="startReconciliationRun", status_code=HTTP_202_ACCEPTED)
    async def start_run(self, request: AnyRequest, resources: AppResources,
                        data: JSONBody[RunRequest]) -> RunStarted:
        request.user.scope(data.site)
        if data.system not in resources.known_systems - RESERVED_SYSTEMS:
            raise ValidationException(f"{data.system!r} is not a registered system")
        reconciler: Reconciler = request.app.state.reconciler
        day = data.day or datetime.now(UTC).date()
        run, task = await reconciler.begin(data.system, data.site, day, trigger="on_demand",
                                           requested_by=acting_user(request.user, resources))
        if run is None:
            raise ConflictException("a run of this system and site is just starting or ending; ask again")
        started = RunStarted(run=run, started=task is not None)
        async with resources.pool.acquire() as conn:
            await audit.record(conn, request.user, action="reconciliation.run",
                               target=f"reconciliation:{data.system}:{data.site}:{day.isoformat()}",
                               reason=data.reason, result=msgspec.to_builtins(started))
        return started

    @get("/runs/{run_id:int}", opt=READ, operation_id="getReconciliationRun")
    async def get_run(self, request: AnyRequest, resources: AppResources, run_id: BigintId) -> Run:
        async with resources.pool.acquire() as conn:
            run = await services.get_run(conn, run_id)
        return visible(request.user, "run", run)

    @get("/drift", opt=READ, operation_id="listDrift")
    async def list_drift(
        self, request: AnyRequest, resources: AppResources, status: FromQuery[DriftStatus | None] = None,
        system: FromQuery[str | None] = None, site: FromQuery[str | None] = None,
        kind: FromQuery[DriftKind | None] = None, limit: PageLimit = 100,
        cursor: FromQuery[str | None] = None,
    ) -> DriftPage:
        before = decode_cursor(cursor, int)[0] if cursor else None
        async with resources.pool.acquire() as conn:
            items = await services.list_drift(conn, sites=request.user.scope(site), status=status,
                                              system=system, kind=kind, limit=limit + 1, before=before)
        shown, next_cursor = id_page(items, limit)
        return DriftPage(items=shown, next_cursor=next_cursor)

    @get("/drift/{drift_id:int}", opt=READ, operation_id="getDrift")
    async def get_drift(self, request: AnyRequest, resources: AppResources, drift_id: BigintId) -> DriftItem:
        async with resources.pool.acquire() as conn:
            found = await services.get_drift(conn, [drift_id])
        return visible(request.user, "drift item", found[0] if found else None)

    @post("/drift/{drift_id:int}/resolve", opt=SRE, operation_id="resolveDrift", status_code=HTTP_200_OK)
    async def resolve(self, request: AnyRequest, resources: AppResources, drift_id: BigintId,
                      data: JSONBody[ResolveRequest]) -> ResolveResult:
        return await repair.resolve(resources, request.user, drift_id, data.action, data.reason,
                                    dry_run=data.dry_run)

    @post("/drift/preview", opt=SRE, operation_id="previewDriftResolve", status_code=HTTP_200_OK)
    async def preview(self, request: AnyRequest, resources: AppResources,
                      data: JSONBody[BulkPreviewRequest]) -> BulkPreview:
        return await repair.preview(resources, request.user, data.filter, data.action)

    @post("/drift/resolve", opt=SRE, operation_id="resolveDriftBulk", status_code=HTTP_200_OK)
    async def resolve_bulk(self, request: AnyRequest, resources: AppResources,
                           data: JSONBody[BulkResolveRequest]) -> BulkResolveResult:
        return await repair.bulk_resolve(resources, request.user, data.selection, data.reason)
