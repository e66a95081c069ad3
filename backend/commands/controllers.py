from __future__ import annotations

from typing import Any
from uuid import UUID

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_200_OK

from backend.auth import READ, SRE, Principal
from backend.commands import services
from backend.commands.schemas import CommandPage, CommandState, CommandStatus, ResendRequest, ResendResult
from backend.paging import PageLimit, decode_cursor, encode_cursor
from backend.privacy import acting_user
from backend.resources import AppResources
from backend.visibility import visible


class CommandController(Controller):
    path = "/api/v1/commands"
    tags = ["commands"]

    @get("/", opt=READ, operation_id="listCommands")
    async def list_commands(
        self, request: Request[Principal, Any, State], resources: AppResources,
        system: FromQuery[str | None] = None,
        status: FromQuery[CommandStatus | None] = None, journey: FromQuery[UUID | None] = None,
        site: FromQuery[str | None] = None,
        limit: PageLimit = 100, cursor: FromQuery[str | None] = None,
    ) -> CommandPage:
        sites = request.user.scope(site)
        before = decode_cursor(cursor, int)[0] if cursor else None
        async with resources.pool.acquire() as conn:
            items, next_seq = await services.list_commands(conn, sites=sites, system=system, status=status,
                                                           journey=journey, limit=limit, cursor=before)
        return CommandPage(items=items, next_cursor=encode_cursor(next_seq) if next_seq is not None else None)

    @get("/{command_id:uuid}", opt=READ, operation_id="getCommand")
    async def get_command(self, request: Request[Principal, Any, State], resources: AppResources,
                          command_id: FromPath[UUID]) -> CommandState:
        async with resources.pool.acquire() as conn:
            command = await services.get_command(conn, command_id)
        return visible(request.user, "command", command)

    @post("/{command_id:uuid}/resend", opt=SRE, operation_id="resendCommand", status_code=HTTP_200_OK)
    async def resend(self, request: Request[Principal, Any, State], resources: AppResources,
                     command_id: FromPath[UUID], data: JSONBody[ResendRequest | None] = None) -> ResendResult:
        async with resources.pool.acquire() as conn:
            return await services.resend(conn, resources.live, request.user,
                                         acting_user(request.user, resources), command_id,
                                         data.reason if data else None)
