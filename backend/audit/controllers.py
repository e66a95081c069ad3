from __future__ import annotations

from datetime import datetime
from typing import Any

from litestar import Controller, Request, get
from litestar.datastructures import State
from litestar.params import FromQuery
from litestar.response import Stream

from backend.audit import services
from backend.audit.schemas import AuditPage
from backend.auth import AUDIT, Principal
from backend.paging import PageLimit, decode_cursor, id_page, query_time
from backend.privacy import actor_name
from backend.resources import AppResources

CSV = "text/csv"


class AuditController(Controller):
    path = "/api/v1/audit"
    tags = ["audit"]

    @get("/", opt=AUDIT, operation_id="listAudit")
    async def list_audit(
        self, request: Request[Principal, Any, State], resources: AppResources,
        actor: FromQuery[str | None] = None, action: FromQuery[str | None] = None,
        site: FromQuery[str | None] = None,
        since: FromQuery[datetime | None] = None, until: FromQuery[datetime | None] = None,
        limit: PageLimit = 100, cursor: FromQuery[str | None] = None,
    ) -> AuditPage:
        """JSON pages, or with `Accept: text/csv` every matching entry as one streamed CSV file."""
        if actor is not None:  # a personal-looking `sub` is stored as its pseudonym: find it by either
            actor = actor_name(actor, resources.settings)
        wanted = services.AuditFilter(actor=actor, action=action, sites=request.user.scope(site),
                                      since=query_time("since", since), until=query_time("until", until))
        if any(media.split(";")[0].strip() == CSV for media in request.headers.get("accept", "").split(",")):
            # the header, not `media_type`: the route's JSON media type would override that. Litestar sends a
            # Response as it is; the schema documents the JSON answer (a union would make it ambiguous)
            return Stream(services.csv_lines(resources.pool, wanted),  # type: ignore[return-value]
                          headers={"Content-Type": f"{CSV}; charset=utf-8",
                                   "Content-Disposition": 'attachment; filename="audit.csv"'})
        before = decode_cursor(cursor, int)[0] if cursor else None
        async with resources.pool.acquire() as conn:
            items = await services.list_entries(conn, wanted, limit=limit + 1, cursor=before)
        shown, next_cursor = id_page(items, limit)
        return AuditPage(items=shown, next_cursor=next_cursor)
