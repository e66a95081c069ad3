"""Sign-in through the organisation's identity provider: OpenID Connect, Authorization Code with PKCE, by
Authlib (discovery from `SWITCHBOARD_OIDC_ISSUER`).

- The state, nonce and PKCE verifier of a sign-in in progress stay in this process; the browser's session
  cookie (HttpOnly, SameSite=Lax, Secure behind HTTPS: dashboard/page_guard.py) holds only a marker tying
  the answer to the browser that asked.
- The ID token is verified (signature by the provider's keys, issuer, audience, nonce, expiry) before
  anything is kept. The tokens stay in this process's memory (dashboard/session.py); the backend gets the
  person's own access token and decides with the same claims map.
- Access tokens are refreshed before they expire, each sign-in's at once. A refresh the provider refuses
  signs the person out and sends their open tabs to the sign-in page; one that fails otherwise (the
  provider slow or down) is tried again each second until the access token expires.
- Signing out ends the provider's session too (RP-initiated logout) when the provider offers it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2
import msgspec
from authlib.integrations.base_client import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.integrations.starlette_client import OAuth
from fastapi import Request
from fastapi.responses import RedirectResponse
from joserfc.errors import JoseError

from dashboard.session import Principal, Sessions, SignIn
from switchboard.waits import stop_tasks

log = logging.getLogger(__name__)

# what the sign-in page tells a person whose sign-in was refused; the details go to the log
REFUSED = "the identity provider's answer could not be verified, so you are not signed in"
UNREACHABLE_PROVIDER = "the identity provider cannot be reached; try again"


class OidcSection(msgspec.Struct, frozen=True, kw_only=True):
    # the identity provider (its discovery document is `<issuer>/.well-known/openid-configuration`); unset:
    # no single sign-on, only a pasted token (and demo mode on loopback)
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    # a confidential client's secret; unset: a public client (PKCE only)
    oidc_client_secret: str | None = None
    # `openid` and what the provider needs to put groups in the tokens and to issue a refresh token (Entra:
    # `openid offline_access api://<app id>/<scope>`); no profile or email: the board needs no personal data
    oidc_scopes: str = "openid"
    # the callback URL registered with the provider; unset: `<the URL the browser used>/auth/callback`
    oidc_redirect_uri: str | None = None
    # access tokens are refreshed this long before they expire
    oidc_refresh_margin_s: float = 60.0

    @property
    def configured(self) -> bool:
        return bool(self.oidc_issuer and self.oidc_client_id)


class StateCache:
    """Authlib's store for sign-ins in progress (state, nonce, PKCE verifier): this process's memory, at most
    `limit` of them (anyone may start a sign-in: the oldest go first), each call O(1) amortised."""

    def __init__(self, limit: int = 10_000) -> None:
        self.limit = limit
        self._items: dict[str, tuple[float, str]] = {}  # in the order they were set, so about by expiry

    async def get(self, key: str) -> str | None:
        item = self._items.get(key)
        return None if item is None or item[0] <= time.monotonic() else item[1]

    async def set(self, key: str, value: str, expires_in: float | None = None) -> None:
        now = time.monotonic()
        self._items.pop(key, None)
        self._items[key] = (now + (expires_in or 600), value)
        for oldest, (expires, _) in list(itertools.islice(self._items.items(), 2)):  # a few at a time
            if expires <= now or len(self._items) > self.limit:
                del self._items[oldest]

    async def delete(self, key: str) -> None:
        self._items.pop(key, None)


class SignInRefused(Exception):  # noqa: N818 - a refusal, named as such
    """The provider's answer did not verify; the message says why, for the log."""


# the provider's answers that mean "not now" rather than "no" (RFC 6749 5.2, 4.1.2.1)
_NOT_NOW = frozenset({"temporarily_unavailable", "server_error", "slow_down"})


@dataclass
class Oidc:
    settings: OidcSection
    pseudonym_key: bytes  # keys the pseudonyms of subjects (dashboard/last_site.py keeps choices by them)
    oauth: OAuth = field(init=False)
    _refresher: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.oauth = OAuth(cache=StateCache())
        issuer = (self.settings.oidc_issuer or "").rstrip("/")
        self.oauth.register(
            "idp", client_id=self.settings.oidc_client_id, client_secret=self.settings.oidc_client_secret,
            server_metadata_url=f"{issuer}/.well-known/openid-configuration",
            client_kwargs={"scope": self.settings.oidc_scopes, "code_challenge_method": "S256",
                           "token_endpoint_auth_method": "client_secret_basic"
                           if self.settings.oidc_client_secret else "none"})

    @property
    def client(self) -> Any:
        return self.oauth.create_client("idp")

    async def metadata(self) -> dict[str, Any]:
        """The provider's discovery document; one naming another issuer is refused (mix-up)."""
        metadata: dict[str, Any] = await self.client.load_server_metadata()
        if metadata.get("issuer") != self.settings.oidc_issuer:
            raise SignInRefused(f"the discovery document names issuer {metadata.get('issuer')!r}, not the"
                                " configured SWITCHBOARD_OIDC_ISSUER")
        return metadata

    def redirect_uri(self, request: Request) -> str:
        return self.settings.oidc_redirect_uri or str(request.url_for("oidc_callback"))

    def pseudonym(self, issuer: str, subject: str) -> str:
        return hmac.new(self.pseudonym_key, f"{issuer}\0{subject}".encode(), hashlib.sha256).hexdigest()[:32]

    async def start(self, request: Request) -> RedirectResponse:
        await self.metadata()
        response: RedirectResponse = await self.client.authorize_redirect(request, self.redirect_uri(request))
        return response

    async def finish(self, request: Request) -> SignIn:
        """The sign-in the provider's answer makes, its ID token verified; SignInRefused otherwise."""
        issuer = self.settings.oidc_issuer or ""
        try:
            await self.metadata()
            token = await self.client.authorize_access_token(request, claims_options={
                "iss": {"essential": True, "value": issuer},
                "aud": {"essential": True, "value": self.settings.oidc_client_id},
                "nonce": {"essential": True}, "sub": {"essential": True}})
        except (OAuthError, JoseError, ValueError) as exc:
            raise SignInRefused(f"{type(exc).__name__}: {exc}") from exc
        identity = token.get("userinfo")
        if not identity:
            raise SignInRefused("the answer carries no ID token (or the sign-in was not started here)")
        try:
            Principal.from_token(token["access_token"])
        except ValueError as exc:
            raise SignInRefused("the provider's access token is not a JWT: the backend could not verify it"
                                " (configure the provider to issue JWT access tokens for the API)") from exc
        return SignIn(access_token=token["access_token"], refresh_token=token.get("refresh_token"),
                      id_token=token.get("id_token"), expires_at=token.get("expires_at"),
                      person=self.pseudonym(issuer, identity["sub"]))

    async def refresh(self, sign_in: SignIn) -> bool:
        """Swap the sign-in's tokens for fresh ones; False when the provider will not (sign out then)."""
        if not sign_in.refresh_token:
            return False
        metadata = await self.metadata()
        async with AsyncOAuth2Client(
                self.settings.oidc_client_id, self.settings.oidc_client_secret, timeout=10,
                token_endpoint_auth_method="client_secret_basic" if self.settings.oidc_client_secret
                else "none") as http:
            token = await http.refresh_token(metadata["token_endpoint"], refresh_token=sign_in.refresh_token)
        sign_in.access_token = token["access_token"]
        sign_in.refresh_token = token.get("refresh_token") or sign_in.refresh_token
        sign_in.id_token = token.get("id_token") or sign_in.id_token
        sign_in.expires_at = token.get("expires_at")
        return True

    async def keep_fresh(self, sessions: Sessions, signed_out: Callable[[str], None],
                         interval_s: float = 1.0) -> None:
        """Refresh every provider sign-in whose access token is within the margin of its expiry."""
        while True:
            await asyncio.sleep(interval_s)
            soon = time.time() + self.settings.oidc_refresh_margin_s
            due = [(browser_id, sign_in) for browser_id, sign_in in sessions.from_provider()
                   if (expires_by := sign_in.expires_by()) is not None and expires_by <= soon]
            outcomes = await asyncio.gather(*(self._refreshed(sign_in) for _, sign_in in due))
            for (browser_id, sign_in), fresh in zip(due, outcomes, strict=True):
                if fresh is False or (fresh is None and (sign_in.expires_by() or 0) <= time.time()):
                    sessions.sign_out(browser_id)
                    try:  # sending the tabs away may fail (a tab going); the refresher must not
                        signed_out(browser_id)
                    except Exception:
                        log.exception("a signed-out person's open tabs could not be sent to sign in")

    async def _refreshed(self, sign_in: SignIn) -> bool | None:
        """True: fresh tokens; False: the provider refused (sign out); None: no answer, try again."""
        try:
            fresh = await self.refresh(sign_in)
        except OAuthError as exc:
            if exc.error not in _NOT_NOW:
                log.warning("token refresh refused (%s); signing the person out", exc.error)
                return False
            reason = exc.error
        except Exception as exc:  # noqa: BLE001 - whatever else the provider does: the loop goes on
            reason = type(exc).__name__
        else:
            sign_in.refresh_failing = False
            return fresh
        if not sign_in.refresh_failing:  # once per outage, not every second of it
            log.warning("token refresh got no answer (%s); trying again each second", reason)
        sign_in.refresh_failing = True
        return None

    def start_refresher(self, sessions: Sessions, signed_out: Callable[[str], None]) -> None:
        self._refresher = asyncio.create_task(self.keep_fresh(sessions, signed_out), name="oidc-refresh")

    async def stop_refresher(self) -> None:
        if self._refresher is not None:
            await stop_tasks([self._refresher])

    async def end_session(self, request: Request, sign_in: SignIn | None, after: str) -> RedirectResponse:
        """Out of the provider's session too when it offers RP-initiated logout; else straight to `after`."""
        try:
            metadata = await self.metadata()
        except (OAuthError, ValueError, OSError, SignInRefused, httpx2.HTTPError):
            metadata = {}
        if not metadata.get("end_session_endpoint"):
            return RedirectResponse(after, status_code=303)
        hint = sign_in.id_token if sign_in is not None else None
        response: RedirectResponse = await self.client.logout_redirect(
            request, post_logout_redirect_uri=after, id_token_hint=hint,
            client_id=self.settings.oidc_client_id, state=secrets.token_urlsafe(16))
        return response
