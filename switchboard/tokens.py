"""Bearer tokens signed with the shared HS256 secret: the backend checks them, the CLI, the demo and the
dashboard's demo sign-in mint them. Kept in the kernel so minting needs no import of the backend."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from switchboard.local_secrets import InsecureSecretError, local_secret
from switchboard.settings import TokenSection

ROLES = frozenset({"manager", "floor_staff", "sre", "connector", "admin"})

MIN_SECRET_BYTES = 32  # an HS256 key at least as long as its hash (RFC 7518, section 3.2)


def strong_secret(name: str, secret: str) -> str:
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise InsecureSecretError(f"{name} is {len(secret.encode())} bytes; HS256 needs at least"
                             f" {MIN_SECRET_BYTES}"
                             " (e.g. `openssl rand -hex 32`)")
    return secret


def jwt_secret(section: TokenSection) -> str:
    """The configured secret, or one kept in the data folder for local use (created once, owner-only)."""
    if section.jwt_secret:
        return strong_secret("SWITCHBOARD_JWT_SECRET", section.jwt_secret)
    return local_secret(section.data_dir, "jwt-secret", lambda: secrets.token_urlsafe(48))


def mint_token(section: TokenSection, *, sub: str, roles: Sequence[str], sites: Iterable[str] | str,
               system: str | None = None, ttl: timedelta = timedelta(hours=12)) -> str:
    unknown = set(roles) - ROLES
    if unknown:
        raise ValueError(f"unknown roles: {', '.join(sorted(unknown))}")
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": sub, "roles": list(roles), "sites": sites if sites == "*" else list(sites),
        "iat": int(now.timestamp()), "exp": int((now + ttl).timestamp()),
    }
    if system:
        claims["system"] = system
    if section.jwt_issuer:
        claims["iss"] = section.jwt_issuer
    if section.jwt_audience:
        claims["aud"] = section.jwt_audience
    return jwt.encode(claims, jwt_secret(section), algorithm="HS256")
