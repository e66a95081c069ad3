from __future__ import annotations

import msgspec
from litestar import Controller, get
from litestar.plugins.prometheus import PrometheusController
from litestar.response import Response
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE

from backend.auth import PUBLIC
from backend.resources import AppResources


class Readiness(msgspec.Struct):
    status: str
    postgres: bool
    nats: bool


class SystemController(Controller):
    tags = ["system"]

    @get("/health", opt=PUBLIC, operation_id="health")
    async def health(self) -> dict[str, str]:
        return {"status": "ok"}

    @get("/ready", opt=PUBLIC, operation_id="ready")
    async def ready(self, resources: AppResources) -> Response[Readiness]:
        try:
            async with resources.pool.acquire(timeout=2) as conn:
                postgres = await conn.fetchval("SELECT true", timeout=2)
        except Exception:  # noqa: BLE001 - whatever the failure, not ready
            postgres = False
        nats_ok = resources.nc.is_connected
        ready = bool(postgres and nats_ok)
        return Response(Readiness("ready" if ready else "unavailable", bool(postgres), nats_ok),
                        status_code=200 if ready else HTTP_503_SERVICE_UNAVAILABLE)


class MetricsController(PrometheusController):
    """Prometheus text format; bind the backend privately or scrape through a private network."""

    opt = PUBLIC
