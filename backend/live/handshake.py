"""Checks at the websocket handshake, before a socket is accepted.

Browsers cannot set headers on a websocket, so the token may come as `?token=`; it is lifted into
the `Authorization` header before the JWT middleware runs, so a socket is authenticated exactly
like a request. The Origin allowlist stops another site's page from opening a socket with a
user's browser (no Origin header: not a browser, nothing to protect against).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.types import ASGIApp, Receive, Scope, Send

from backend import metrics


class QueryTokenMiddleware:
    """For websocket handshakes without an Authorization header: `?token=` becomes one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.WEBSOCKET \
                and not any(name == b"authorization" for name, _ in scope["headers"]):
            query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
            token = next((value for name, value in query if name == "token"), None)
            if token:
                # in place, in the server's own scope: uvicorn logs the path and query of every
                # websocket it accepts, and a token must never reach a log
                scope["query_string"] = urlencode([(n, v) for n, v in query if n != "token"]).encode(
                    "latin-1"
                )
                scope["headers"] = [
                    *scope["headers"],
                    (b"authorization", b"Bearer " + token.encode("latin-1")),
                ]
        await self.app(scope, receive, send)


def _same_origin(origin: str, host: str | None) -> bool:
    return host is not None and urlsplit(origin).netloc == host


def allowed_origin(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Route guard: a browser's Origin must be allowlisted (`SWITCHBOARD_ALLOWED_ORIGINS`) or our own."""
    origin = connection.headers.get("origin")
    if origin is None:
        return
    allowed = connection.app.state.resources.settings.live.allowed_origins
    if origin in allowed or _same_origin(origin, connection.headers.get("host")):
        return
    metrics.LIVE_REFUSED.labels("origin").inc()
    raise PermissionDeniedException("origin not allowed")
