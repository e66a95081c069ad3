from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, get
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, QueryParameter

from backend.auth import READ, Principal
from backend.journeys import services
from backend.journeys.schemas import JourneyDetail, JourneyPage, Stage
from backend.paging import PageLimit, query_time
from backend.resources import AppResources
from backend.visibility import visible
from switchboard.events import whole

# printable text, as a reference is: no control character (C0, DEL, C1), no invisible mark that reorders text
SEARCHABLE = whole(r"[^\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]+")


class JourneyController(Controller):
    path = "/api/v1/journeys"
    tags = ["journeys"]

    @get("/", opt=READ, operation_id="listJourneys")
    async def list_journeys(
        self, request: Request[Principal, Any, State], resources: AppResources,
        site: FromQuery[str | None] = None,
        stage: FromQuery[Stage | None] = None, ref: FromQuery[str | None] = None,
        limit: PageLimit = 50, cursor: FromQuery[str | None] = None,
        q: Annotated[str | None, QueryParameter(min_length=1, max_length=100, pattern=SEARCHABLE)] = None,
        since: FromQuery[datetime | None] = None, until: FromQuery[datetime | None] = None,
    ) -> JourneyPage:
        """`q`: the start of any reference (`queue:T-00` or `T-00`) or ticket number, any case."""
        sites = request.user.scope(site)
        async with resources.pool.acquire() as conn:
            return await services.list_journeys(conn, sites=sites, stage=stage, ref=ref, limit=limit,
                                                cursor=cursor, q=q, since=query_time("since", since),
                                                until=query_time("until", until))

    @get("/{journey_id:uuid}", opt=READ, operation_id="getJourney")
    async def get_journey(self, request: Request[Principal, Any, State], resources: AppResources,
                          journey_id: FromPath[UUID]) -> JourneyDetail:
        async with resources.pool.acquire() as conn:
            # the site is judged before the timeline and the rest are read: a caller of another site costs
            # one row, however long the journey's history
            row = visible(request.user, "journey", await services.find_journey(conn, journey_id),
                          site=lambda r: r["site"])
            return await services.journey_detail(conn, row, request.user.scope(None))
