from __future__ import annotations

from litestar import Controller, get

from backend.auth import READ
from backend.integrations import services
from backend.integrations.schemas import IntegrationPage
from backend.resources import AppResources


class IntegrationController(Controller):
    path = "/api/v1/integrations"
    tags = ["integrations"]

    @get("/", opt=READ, operation_id="listIntegrations")
    async def list_integrations(self, resources: AppResources) -> IntegrationPage:
        """Per system: health, traffic, command delivery and pace. Integrations belong to no site."""
        lag = await services.consumer_lag(resources.js)
        async with resources.pool.acquire() as conn:
            items = await services.integrations(conn, consumer_lag=lag)
        return IntegrationPage(items=items, consumer_lag=lag)
