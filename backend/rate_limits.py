"""Rate limits on the routes anyone may reach with a request: event ingest and inbound webhooks.

Litestar's rate limit middleware, once per limit, checking only the routes whose `opt` names that
limit (`RATE_LIMITED`). Ingest is counted per connector system (the token's `system`, else its
subject), webhooks per client address (before the signature is checked there is nobody else to
count). Counts live in each replica's memory: N replicas admit up to N times the rate. Over the
limit: 429, a problem document, with `RateLimit-*` headers saying when to come back.
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.middleware import DefineMiddleware
from litestar.middleware.rate_limit import RateLimitConfig, get_remote_address

from switchboard.settings import Settings

RATE_LIMITED = "rate_limit"
INGEST: dict[str, Any] = {RATE_LIMITED: "ingest"}
WEBHOOK: dict[str, Any] = {RATE_LIMITED: "webhook"}


def _connector(request: Request[Any, Any, Any]) -> str:
    principal = request.scope.get("user")
    who = getattr(principal, "system", None) or getattr(principal, "sub", None) or get_remote_address(request)
    return f"ingest:{who}"


def _client(request: Request[Any, Any, Any]) -> str:
    return f"webhook:{get_remote_address(request)}"


def _limit(name: str, per_s: int, identify: Any) -> DefineMiddleware:
    async def applies(request: Request[Any, Any, Any]) -> bool:
        return bool(request.route_handler.opt.get(RATE_LIMITED) == name)

    return RateLimitConfig(rate_limit=("second", per_s), identifier_for_request=identify,
                           check_throttle_handler=applies).middleware


def rate_limits(settings: Settings) -> list[DefineMiddleware]:
    limits = [("ingest", settings.ingest_rate_per_s, _connector),
              ("webhook", settings.webhook_rate_per_s, _client)]
    return [_limit(name, per_s, identify) for name, per_s, identify in limits if per_s > 0]
