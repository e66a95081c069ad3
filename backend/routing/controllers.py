from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from litestar import Controller, Request, get
from litestar.datastructures import State
from litestar.params import FromQuery

from backend.auth import READ, Principal
from backend.resources import AppResources
from backend.routing import services
from backend.routing.schemas import RulesInForce


class RuleController(Controller):
    path = "/api/v1/rules"
    tags = ["routing"]

    @get("/", opt=READ, operation_id="listRules")
    async def list_rules(self, request: Request[Principal, Any, State], resources: AppResources,
                         site: FromQuery[str | None] = None) -> RulesInForce:
        sites = request.user.scope(site)
        async with resources.pool.acquire() as conn:
            return await services.rules_in_force(conn, resources.rules, sites, resources.sites,
                                                 datetime.now(UTC))
