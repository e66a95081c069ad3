"""What every dashboard response carries: no framing by other sites (clickjacking), and a session cookie
marked `Secure` when the browser reached the dashboard over HTTPS.

"Over HTTPS" is the request's scheme as uvicorn sees it: `https` when TLS ends at uvicorn, or when a
proxy that uvicorn trusts (`FORWARDED_ALLOW_IPS`, loopback by default) says `X-Forwarded-Proto: https`.
The guard must wrap NiceGUI's session middleware to see its cookie, so it installs both (NiceGUI keeps
a session middleware it finds, and adds only its request tracking inside it).
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.sessions import SessionMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

FRAMING_HEADERS = [(b"x-frame-options", b"DENY"), (b"content-security-policy", b"frame-ancestors 'none'")]
_FRAMING_NAMES = frozenset(name for name, _ in FRAMING_HEADERS)


def _secure(cookie: bytes) -> bytes:
    return cookie if b"secure" in cookie.lower() else cookie + b"; secure"


class PageGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        secure = scope.get("scheme") == "https"

        async def guarded(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _FRAMING_NAMES]
                if secure:
                    headers = [(k, _secure(v) if k.lower() == b"set-cookie" else v) for k, v in headers]
                message["headers"] = headers + FRAMING_HEADERS
            await send(message)

        await self.app(scope, receive, guarded)


def guard_pages(app: FastAPI, storage_secret: str) -> None:
    """Call before `ui.run(storage_secret=...)`, with its secret: NiceGUI's session middleware, guarded."""
    app.add_middleware(SessionMiddleware, secret_key=storage_secret)
    app.add_middleware(PageGuard)
