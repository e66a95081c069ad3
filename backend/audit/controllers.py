from __future__ import annotations

from datetime import datetime
from typing import Annotated

from litestar import Controller, get
from litestar.params import FromQuery, QueryParameter

from backend.audit import services
from backend.audit.schemas import AuditPage
from backend.auth import AUDIT
from backend.paging import decode_cursor, encode_cursor
from backend.privacy import actor_name
from backend.resources import AppResources


class AuditController(Controller):
    path = "/api/v1/audit"
    tags = ["audit"]

    @get("/", opt=AUDIT, operation_id="listAudit")
    async def list_audit(
        self, resources: AppResources, actor: FromQuery[str | None] = None,
        since: FromQuery[datetime | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100, cursor: FromQuery[str | None] = None,
    ) -> AuditPage:
        before = decode_cursor(cursor, int)[0] if cursor else None
        if actor is not None:  # a personal-looking `sub` is stored as its pseudonym: find it by either
            actor = actor_name(actor, resources.settings)
        async with resources.pool.acquire() as conn:
            items = await services.list_entries(conn, actor=actor, since=since, limit=limit + 1,
                                                cursor=before)
        next_cursor = encode_cursor(items[limit - 1].id) if len(items) > limit else None
        return AuditPage(items=items[:limit], next_cursor=next_cursor)
