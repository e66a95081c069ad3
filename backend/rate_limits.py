"""Rate limits on the routes anyone may reach with a request: event ingest and inbound webhooks.

Litestar's rate limit middleware, once per limit, checking only the routes whose `opt` names that
limit (`RATE_LIMITED`). Ingest is counted per connector system (the token's `system`, else its
subject), webhooks per client address (before the signature is checked there is nobody else to
count). Counts live in each replica's memory: N replicas admit up to N times the rate. Over the
limit: 429, a problem document, with `RateLimit-*` headers saying when to come back.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from litestar import Litestar, Request
from litestar.middleware import DefineMiddleware
from litestar.middleware.rate_limit import RateLimitConfig, get_remote_address

RATE_LIMITED = "rate_limit"
STORE = "rate_limit"  # Litestar's default store for the middleware: in memory, per replica
_FORGET_EVERY_S = 60.0
INGEST: dict[str, Any] = {RATE_LIMITED: "ingest"}
WEBHOOK: dict[str, Any] = {RATE_LIMITED: "webhook"}


class RateLimitSection(msgspec.Struct, frozen=True, kw_only=True):
    # requests per second to the public ingest routes: per connector system (POST /api/v1/events) and per
    # client address (POST /api/v1/webhooks/<system>), per backend replica; 0: no limit
    ingest_rate_per_s: int = 100
    webhook_rate_per_s: int = 100


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
                           check_throttle_handler=applies, store=STORE).middleware


def rate_limits(section: RateLimitSection) -> list[DefineMiddleware]:
    limits = [("ingest", section.ingest_rate_per_s, _connector),
              ("webhook", section.webhook_rate_per_s, _client)]
    return [_limit(name, per_s, identify) for name, per_s, identify in limits if per_s > 0]


async def forget_expired_counts(app: Litestar, every_s: float = _FORGET_EVERY_S) -> None:
    """The memory store drops an expired count only when the same client comes again: every address that
    ever sent one request (to the webhook route, before any signature check) would be kept for good."""
    store = app.stores.get(STORE)
    while True:
        await asyncio.sleep(every_s)
        await store.delete_expired()  # type: ignore[attr-defined]
