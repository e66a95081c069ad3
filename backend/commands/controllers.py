from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, get
from litestar.datastructures import State
from litestar.params import FromQuery, QueryParameter

from backend.auth import READ, Principal
from backend.commands import services
from backend.commands.schemas import CommandPage, CommandStatus
from backend.paging import decode_cursor, encode_cursor
from backend.resources import AppResources


class CommandController(Controller):
    path = "/api/v1/commands"
    tags = ["commands"]

    @get("/", opt=READ, operation_id="listCommands")
    async def list_commands(
        self, request: Request[Principal, Any, State], resources: AppResources,
        system: FromQuery[str | None] = None,
        status: FromQuery[CommandStatus | None] = None, journey: FromQuery[UUID | None] = None,
        site: FromQuery[str | None] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100, cursor: FromQuery[str | None] = None,
    ) -> CommandPage:
        sites = request.user.scope(site)
        before = decode_cursor(cursor, int)[0] if cursor else None
        async with resources.pool.acquire() as conn:
            items, next_seq = await services.list_commands(conn, sites=sites, system=system, status=status,
                                                           journey=journey, limit=limit, cursor=before)
        return CommandPage(items=items, next_cursor=encode_cursor(next_seq) if next_seq is not None else None)
