"""Who is signed in, and what the board lets them see and press.

The dashboard reads the token's claims only to shape the board; the backend verifies the token on
every request and enforces every action whatever the board shows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import jwt

from switchboard.claims_map import ClaimsMap, configured_claims_map, flat_grants, union_sites

READ_ROLES = frozenset({"manager", "floor_staff", "sre", "admin"})


@dataclass(frozen=True)
class Principal:
    sub: str
    roles: frozenset[str]
    sites: tuple[str, ...] | None  # None: every site
    expires_at: float | None
    # each role with the sites it is held at (None: every site), as the backend reads the same token
    grants: dict[str, frozenset[str] | None]

    @classmethod
    def from_token(cls, token: str, claims_map: ClaimsMap | None = None) -> Principal:
        """The token's claims, unverified (see the module docstring); raises ValueError if it is no JWT.
        Through the claims map when one is configured, as the backend reads them."""
        try:
            claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise ValueError("this is not a token") from exc
        claims_map = claims_map or configured_claims_map()
        if claims_map is not None:
            grants = claims_map.grants(claims)
        else:
            roles, sites = claims.get("roles") or [], claims.get("sites")
            grants = flat_grants([roles] if isinstance(roles, str) else roles,
                                 None if sites in ("*", ["*"], None) else frozenset(sites))
        sites_held = union_sites(grants)
        return cls(
            sub=str(claims.get("sub", "")),
            roles=frozenset(grants),
            sites=None if sites_held is None else tuple(sorted(sites_held)),
            expires_at=claims.get("exp"),
            grants=grants,
        )

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= time.time()

    def has(self, *roles: str) -> bool:
        return bool(self.roles & ({"admin", *roles}))

    def sites_for(self, *roles: str) -> frozenset[str] | None:
        """The sites where one of `roles` (or admin) is held; None: every site."""
        return union_sites(self.grants, {"admin", *roles})

    def may_at(self, site: str, *roles: str) -> bool:
        sites = self.sites_for(*roles)
        return sites is None or site in sites

    @property
    def may_read(self) -> bool:
        return bool(self.roles & READ_ROLES)

    @property
    def may_act_on_failures(self) -> bool:
        return self.has("sre")

    @property
    def sites_text(self) -> str:
        return "all sites" if self.sites is None else ", ".join(self.sites)


@dataclass
class SignIn:
    """One browser's sign-in: a pasted token, or an identity provider's tokens, which the dashboard refreshes
    in place (every tab of the sign-in then uses the fresh access token)."""

    access_token: str
    refresh_token: str | None = None
    id_token: str | None = None  # the provider's, for RP-initiated logout
    expires_at: float | None = None  # the access token's
    person: str | None = None  # a pseudonym of the provider's subject: never the subject itself
    seen_at: float = field(default_factory=time.time)  # a tab of it was last open then
    refresh_failing: bool = False  # its last refresh got no answer (said once in the log)
    signed_out: bool = False  # every tab holding it stops acting with it

    @property
    def from_provider(self) -> bool:
        return self.person is not None

    def expires_by(self) -> float | None:
        """When the access token stops working: the earlier of what the provider said (`expires_in`) and the
        token's own `exp`, as a provider's answer to a refresh may state a default lifetime instead."""
        try:
            claimed = jwt.decode(self.access_token, options={"verify_signature": False}).get("exp")
        except jwt.PyJWTError:
            claimed = None
        known = [t for t in (self.expires_at, claimed) if isinstance(t, int | float)]
        return min(known, default=None)


class Sessions:
    """Sign-ins by browser id, in this process's memory only: never written to disk or to a cookie."""

    def __init__(self) -> None:
        self._sign_ins: dict[str, SignIn] = {}

    def sign_in(self, browser_id: str, token: str | SignIn) -> None:
        self._sign_ins[browser_id] = token if isinstance(token, SignIn) else SignIn(token)

    def sign_out(self, browser_id: str) -> SignIn | None:
        sign_in = self._sign_ins.pop(browser_id, None)
        if sign_in is not None:
            sign_in.signed_out = True
        return sign_in

    def current(self, browser_id: str) -> SignIn | None:
        """The browser's sign-in while its access token is valid; an expired one is signed out."""
        sign_in = self._sign_ins.get(browser_id)
        if sign_in is not None and Principal.from_token(sign_in.access_token).expired:
            self.sign_out(browser_id)
            return None
        return sign_in

    def token(self, browser_id: str) -> str | None:
        sign_in = self.current(browser_id)
        return None if sign_in is None else sign_in.access_token

    def from_provider(self) -> list[tuple[str, SignIn]]:
        return [(browser, s) for browser, s in self._sign_ins.items() if s.from_provider]

    def forget_idle(self, open_browsers: set[str], idle_s: float, now: float | None = None) -> list[str]:
        """Sign out every sign-in none of whose tabs has been open for `idle_s`, and every expired one
        without an open tab; the browser ids signed out."""
        now = time.time() if now is None else now
        gone = []
        for browser_id, sign_in in list(self._sign_ins.items()):
            if browser_id in open_browsers:
                sign_in.seen_at = now
            elif now - sign_in.seen_at > idle_s or Principal.from_token(sign_in.access_token).expired:
                self.sign_out(browser_id)
                gone.append(browser_id)
        return gone
