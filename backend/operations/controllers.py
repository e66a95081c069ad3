from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.datastructures import State
from litestar.params import FromQuery, QueryParameter

from backend.auth import READ, Principal
from backend.operations import services
from backend.operations.schemas import CapacityList, FlowHistoryList, FlowList
from backend.resources import AppResources


class OperationsController(Controller):
    path = "/api/v1"
    tags = ["operations"]

    @get("/flow", opt=READ, operation_id="getFlow")
    async def flow(self, request: Request[Principal, Any, State], resources: AppResources,
                   site: FromQuery[str | None] = None) -> FlowList:
        sites = request.user.scope(site)
        async with resources.pool.acquire() as conn:
            return FlowList(items=await services.flow(conn, sites, resources.sites.targets_document))

    @get("/flow/history", opt=READ, operation_id="getFlowHistory")
    async def flow_history(self, request: Request[Principal, Any, State], resources: AppResources,
                           site: FromQuery[str | None] = None,
                           minutes: Annotated[int, QueryParameter(ge=1, le=24 * 60)] = 60) -> FlowHistoryList:
        """The flow rates minute by minute for the last `minutes`, so a chart opened now shows the past."""
        sites = request.user.scope(site)
        async with resources.pool.acquire() as conn:
            return FlowHistoryList(items=await services.flow_history(conn, sites, minutes, datetime.now(UTC)))

    @get("/capacity", opt=READ, operation_id="getCapacity")
    async def capacity(self, request: Request[Principal, Any, State], resources: AppResources,
                       site: FromQuery[str | None] = None) -> CapacityList:
        sites = request.user.scope(site)
        async with resources.pool.acquire() as conn:
            return CapacityList(items=await services.capacity(conn, sites))
