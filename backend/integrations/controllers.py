from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.datastructures import State

from backend.auth import READ, Principal
from backend.integrations import services
from backend.integrations.schemas import IntegrationPage
from backend.resources import AppResources


class IntegrationController(Controller):
    path = "/api/v1/integrations"
    tags = ["integrations"]

    @get("/", opt=READ, operation_id="listIntegrations")
    async def list_integrations(self, request: Request[Principal, Any, State],
                                resources: AppResources) -> IntegrationPage:
        """Per system: health, traffic, command delivery and pace. Integrations belong to no site; a pace's
        floor shows only the caller's sites."""
        lag = await services.consumer_lag(resources.js)
        async with resources.pool.acquire() as conn:
            items = await services.integrations(conn, consumer_lag=lag)
        return IntegrationPage(items=services.seen_from(items, request.user.scope(None)), consumer_lag=lag)
