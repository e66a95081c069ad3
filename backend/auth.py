"""Authentication (JWT: HS256 secret or an identity provider's JWKS) and authorisation.

Every route declares its decision in `opt`: `PUBLIC`, or the roles that may call it. One global
guard enforces it and refuses any route that declares nothing, so a forgotten decision fails
closed. Site scoping is checked where the site is known: in the handlers and services.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

import jwt
import msgspec
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.plugins.problem_details import ProblemDetailsException
from litestar.security.jwt import JWTAuth, Token
from litestar.status_codes import HTTP_403_FORBIDDEN

from backend.jwks import JwksKeys
from switchboard.claims_map import ClaimsMap, configured_claims_map, flat_grants, union_sites
from switchboard.tokens import ROLES, jwt_secret, strong_secret

if TYPE_CHECKING:
    from backend.settings import BackendSettings

READ_ROLES = frozenset({"manager", "floor_staff", "sre", "admin"})

PUBLIC: dict[str, Any] = {"public": True, "exclude_from_auth": True}
READ: dict[str, Any] = {"roles": READ_ROLES}
SRE: dict[str, Any] = {"roles": frozenset({"sre", "admin"})}
FLOOR: dict[str, Any] = {"roles": frozenset({"floor_staff", "sre", "admin"})}
CONNECTOR: dict[str, Any] = {"roles": frozenset({"connector", "admin"})}
AUDIT: dict[str, Any] = {"roles": frozenset({"sre", "admin"})}


class AuthSection(msgspec.Struct, frozen=True, kw_only=True):
    """How tokens are checked beyond the kernel's `TokenSection` (the HS256 secret, issuer and audience)."""

    jwks_url: str | None = None
    # keys the backend's own event signatures and manual users' pseudonyms; every replica needs the same one.
    # Unset: the JWT secret. With a JWKS and no JWT secret one of the two must be set (else the backend
    # refuses to start)
    signing_secret: str | None = None
    # an unknown `kid` refetches the JWKS at most this often (rotation without restart, no fetch storms)
    jwks_cooldown_s: float = 30.0
    # and refetched in the background this often besides (the last keys serve while the provider is down)
    jwks_refresh_s: float = 300.0
    # a token valid for longer than this (exp - iat; exp - now without iat) is refused
    max_token_lifetime_s: float = 12 * 3600.0


NO_ROLE = ("you are signed in, but none of your groups gives you a Switchboard role: ask your IT team to add"
           " you to a group the claims map names (SWITCHBOARD_CLAIMS_MAP)")


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    sub: str
    roles: frozenset[str]
    sites: frozenset[str] | None  # None: every site. While a request is served: where its route's roles hold
    system: str | None = None
    expires_at: datetime | None = None
    # each role with the sites it is held at (None: every site); `roles` and `sites` are their union
    grants: dict[str, frozenset[str] | None] = {}

    def acting_as(self, allowed: frozenset[str]) -> Principal:
        """This principal for a route `allowed` roles may call: its sites narrowed to where it holds one of
        them, so that floor_staff at north and manager at south acts as floor_staff at north only."""
        if not self.grants:
            return self
        return msgspec.structs.replace(self, sites=union_sites(self.grants, allowed | {"admin"}))

    def may_see(self, site: str | None) -> bool:
        return self.sites is None or site in self.sites

    def scope(self, site: str | None) -> list[str] | None:
        """Sites to filter by for a request that may name one; None means every site."""
        if site is not None:
            if not self.may_see(site):
                raise PermissionDeniedException(f"site {site!r} is outside your sites")
            return [site]
        return None if self.sites is None else sorted(self.sites)


def principal_from_claims(claims: dict[str, Any], expires_at: datetime | None = None,
                          claims_map: ClaimsMap | None = None) -> Principal:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise NotAuthorizedException("token has no subject")
    if claims_map is not None:
        # the provider's groups, through the map; its own `roles`/`sites` claims mean nothing here
        return _principal(sub, claims_map.grants(claims), claims.get("system"), expires_at)
    roles, sites = claims.get("roles", []), claims.get("sites")
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise NotAuthorizedException("token roles must be a list of names")
    # an identity provider's token carries roles of other applications too: ours count, the rest are ignored
    # (a token with none of ours is a valid identity that may do nothing: 403 on every route needing a role)
    roles = [r for r in roles if r in ROLES]
    if sites == "*" or sites == ["*"]:
        scope = None
    elif isinstance(sites, list) and all(isinstance(s, str) for s in sites):
        scope = frozenset(sites)
    else:
        raise NotAuthorizedException("token sites must be a list or '*'")
    return _principal(sub, flat_grants(roles, scope), claims.get("system"), expires_at)


def _principal(sub: str, grants: dict[str, frozenset[str] | None], system: Any,
               expires_at: datetime | None) -> Principal:
    if "connector" in grants and not isinstance(system, str):
        raise NotAuthorizedException("a connector token needs a system claim")
    roles = frozenset(grants)
    return Principal(sub=sub, roles=roles, sites=union_sites(grants) if roles else frozenset(),
                     system=system if isinstance(system, str) else None, expires_at=expires_at, grants=grants)


class SwitchboardToken(Token):
    """Litestar's token, verified against a JWKS when one is configured (keys rotate without a restart)."""

    jwks: ClassVar[JwksKeys | None] = None

    @classmethod
    def decode_payload(cls, encoded_token: str, secret: str, algorithms: list[str], issuer: Any = None,
                       audience: Any = None, options: Any = None) -> Any:
        if cls.jwks is None:
            return super().decode_payload(encoded_token, secret, algorithms, issuer, audience, options)
        kid = jwt.get_unverified_header(encoded_token).get("kid")
        key = cls.jwks.key(kid) if isinstance(kid, str) else None  # in memory: never a fetch on a request
        if key is None:
            raise jwt.InvalidTokenError("the token's key is not among the identity provider's keys")
        return jwt.decode(encoded_token, key=key.key, algorithms=["RS256", "ES256"], issuer=issuer,
                          audience=audience, options=options)


def _principal_retriever(max_lifetime_s: float, claims_map: ClaimsMap | None) -> Any:
    async def retrieve(token: Token, _: ASGIConnection[Any, Any, Any, Any]) -> Principal:
        # a token without `iat` gets Litestar's default, now: its lifetime is what it has left
        if (token.exp - token.iat).total_seconds() > max_lifetime_s:
            raise NotAuthorizedException(f"token lifetime exceeds {max_lifetime_s:g}s")
        return principal_from_claims({"sub": token.sub, **token.extras}, token.exp, claims_map)

    return retrieve


def authorize(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """The global guard: the route's declared decision, enforced."""
    if handler.opt.get("public") or connection.scope.get("method") == "OPTIONS":
        return  # declared public, or Litestar's own preflight answer, which carries no data
    allowed = handler.opt.get("roles")
    if not allowed:
        raise PermissionDeniedException("this route declares no authorisation decision")
    principal: Principal = connection.user
    if not principal.roles:
        raise ProblemDetailsException(status_code=HTTP_403_FORBIDDEN, title="No Switchboard role",
                                      detail=NO_ROLE)
    if not principal.roles & allowed and "admin" not in principal.roles:
        raise PermissionDeniedException("your role may not do this")
    # the handler and the services check sites against where the principal holds a role this route allows
    connection.scope["user"] = principal.acting_as(allowed)


def check_secrets(settings: BackendSettings) -> None:
    """At start: every configured secret strong enough, and one the replicas share for their own events."""
    if settings.tokens.jwt_secret:
        strong_secret("SWITCHBOARD_JWT_SECRET", settings.tokens.jwt_secret)
    signing_secret(settings)


def signing_secret(settings: BackendSettings) -> str:
    """The secret every replica shares for the backend's own keys (own event signatures, manual pseudonyms).
    With a JWKS there is no JWT secret to fall back on: a per-data-folder one would differ between
    replicas."""
    if settings.auth.signing_secret:
        return strong_secret("SWITCHBOARD_SIGNING_SECRET", settings.auth.signing_secret)
    if settings.auth.jwks_url and not settings.tokens.jwt_secret:
        raise MissingSigningSecret("with SWITCHBOARD_JWKS_URL set SWITCHBOARD_SIGNING_SECRET (or"
                                   " SWITCHBOARD_JWT_SECRET) "
                                   "must be set, the same on every replica: it keys the backend's own event"
                                   " signatures")
    return jwt_secret(settings.tokens)


class MissingSigningSecret(RuntimeError):  # noqa: N818 - a missing setting, named as such
    """No secret all replicas share to sign the backend's own events."""


def jwks_keys(settings: BackendSettings) -> JwksKeys | None:
    """The identity provider's keys, when one is configured; it needs an issuer and an audience to check."""
    auth, tokens = settings.auth, settings.tokens
    if not auth.jwks_url:
        return None
    if not (tokens.jwt_issuer and tokens.jwt_audience):
        raise ValueError("with SWITCHBOARD_JWKS_URL set SWITCHBOARD_JWT_ISSUER and SWITCHBOARD_JWT_AUDIENCE"
                         " must be set: without them a token the provider issued to any other application"
                         " would be accepted")
    return JwksKeys(auth.jwks_url, cooldown_s=auth.jwks_cooldown_s, refresh_s=auth.jwks_refresh_s)


def jwt_auth(settings: BackendSettings, jwks: JwksKeys | None = None) -> JWTAuth[Principal]:
    auth, tokens = settings.auth, settings.tokens
    token_cls: type[SwitchboardToken] = SwitchboardToken
    if jwks is not None:
        token_cls = type("JWKSToken", (SwitchboardToken,), {"jwks": jwks})
    return JWTAuth[Principal](
        retrieve_user_handler=_principal_retriever(auth.max_token_lifetime_s, configured_claims_map()),
        token_secret=jwt_secret(tokens) if not auth.jwks_url else "unused-with-jwks",
        algorithm="HS256",
        token_cls=token_cls,
        accepted_issuers=[tokens.jwt_issuer] if tokens.jwt_issuer else None,
        accepted_audiences=[tokens.jwt_audience] if tokens.jwt_audience else None,
        exclude_opt_key="exclude_from_auth",
    )
