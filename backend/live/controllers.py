"""`GET /api/v1/live`: the websocket of CONTRACT section 7."""

from __future__ import annotations

from typing import Any

from litestar import WebSocket, websocket

from backend.auth import READ, Principal
from backend.live.handshake import allowed_origin
from backend.live.service import LiveService
from backend.live.session import LiveSession


@websocket("/api/v1/live", opt=READ, guards=[allowed_origin])
async def live_socket(socket: WebSocket[Principal, Any, Any]) -> None:
    """Authenticated like any request (header or `?token=`), for read roles, from allowed origins only."""
    service: LiveService = socket.app.state.live
    await socket.accept()
    await LiveSession(socket, service.hub, service.pool, service.snapshots).run()
