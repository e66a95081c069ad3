from __future__ import annotations

from litestar import Controller, Request, get
from litestar.params import FromQuery

from backend.auth import READ, Principal
from backend.operations import services
from backend.operations.schemas import CapacityList, FlowList
from backend.resources import AppResources


class OperationsController(Controller):
    path = "/api/v1"
    tags = ["operations"]

    @get("/flow", opt=READ, operation_id="getFlow")
    async def flow(self, request: Request[Principal, object, object], resources: AppResources,
                   site: FromQuery[str | None] = None) -> FlowList:
        sites = request.user.scope(site)
        async with resources.pool.acquire() as conn:
            return FlowList(items=await services.flow(conn, sites))

    @get("/capacity", opt=READ, operation_id="getCapacity")
    async def capacity(self, request: Request[Principal, object, object], resources: AppResources,
                       site: FromQuery[str | None] = None) -> CapacityList:
        sites = request.user.scope(site)
        async with resources.pool.acquire() as conn:
            return CapacityList(items=await services.capacity(conn, sites))
