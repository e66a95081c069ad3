"""The dashboard process's state in one place, and the per-tab view of it a page works with."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from fastapi.responses import RedirectResponse
from nicegui import app, ui

from dashboard.backend_client import BackendClient, BackendError, Capabilities
from dashboard.coalesce import Coalescer
from dashboard.last_site import LastSites, pseudonym
from dashboard.live import LiveConnection, LiveRegistry
from dashboard.oidc import Oidc
from dashboard.session import Principal, Sessions, SignIn
from dashboard.settings import DashboardSettings
from dashboard.sites import SITES, SiteBook, load_site_book
from switchboard.local_secrets import local_secret

# how long the backend's OpenAPI answer is trusted: a backend upgraded under a running board shows
# its new endpoints within a minute
CAPABILITIES_TTL_S = 60.0
SHARED_READ_S = 2.0
MAX_REFUSALS = 10_000  # sign-in refusals kept for browsers to read, and tokens handed over (each)
HANDOVER_S = 60.0
V = TypeVar("V")


def _put_newest(kept: dict[str, V], key: str, value: V) -> None:
    """`key` as the newest of `kept`, the oldest let go past MAX_REFUSALS: what anyone can make pile up."""
    kept.pop(key, None)
    kept[key] = value
    while len(kept) > MAX_REFUSALS:
        del kept[next(iter(kept))]


@dataclass
class Dashboard:
    settings: DashboardSettings
    backend_url: str
    demo: bool
    sessions: Sessions = field(default_factory=Sessions)
    # the counter each browser works at, per site, chosen on the Floor page (this process's memory only)
    counters: dict[tuple[str, str], str] = field(default_factory=dict)
    live: LiveRegistry = field(init=False)
    # single sign-on through the organisation's identity provider, when one is configured
    oidc: Oidc | None = field(init=False)
    last_sites: LastSites = field(init=False)
    _pseudonym_key: bytes = field(init=False)
    # why a browser's last sign-in was refused, for its sign-in page to say (this process's memory only)
    refusals: dict[str, str] = field(default_factory=dict)
    # checked tokens waiting for their browser's sign-in request (`hand_over`)
    _handovers: dict[str, tuple[str, str, float]] = field(default_factory=dict)
    _reads: dict[tuple[str, str, int], asyncio.Task[Any]] = field(default_factory=dict)
    _capabilities: Capabilities | None = None
    _capabilities_at: float = float("-inf")

    def __post_init__(self) -> None:
        self.live = LiveRegistry(self.backend_url)
        self._pseudonym_key = local_secret(self.settings.tokens.data_dir, "dashboard-pseudonyms",
                                           lambda: secrets.token_urlsafe(32)).encode()
        self.last_sites = LastSites(Path(self.settings.tokens.data_dir) / "dashboard-last-sites.json")
        oidc = self.settings.oidc
        self.oidc = Oidc(oidc, self._pseudonym_key) if oidc.configured else None

    def forget_idle(self, open_browsers: set[str]) -> None:
        """Sign-ins without an open tab for `SWITCHBOARD_SESSION_IDLE_S`, and what was kept for them."""
        gone = set(self.sessions.forget_idle(open_browsers, self.settings.dashboard.session_idle_s))
        for key in [key for key in self.counters if key[0] in gone]:
            del self.counters[key]

    def hand_over(self, browser_id: str, token: str) -> str:
        """A one-time key under which a checked token waits, a minute at most, for its browser's next request
        (`/auth/token`), which signs it in under a new session id: a page's event cannot set a cookie."""
        now = time.monotonic()
        while self._handovers and next(iter(self._handovers.values()))[2] < now:  # the expired, oldest first
            del self._handovers[next(iter(self._handovers))]
        key = secrets.token_urlsafe(24)
        _put_newest(self._handovers, key, (browser_id, token, now + HANDOVER_S))
        return key

    def take_over(self, key: str, browser_id: str) -> str | None:
        """The token handed over under `key`, once, to the browser it was checked for and in time."""
        browser, token, until = self._handovers.pop(key, ("", "", 0.0))
        return token if browser == browser_id and time.monotonic() < until else None

    def refuse(self, browser_id: str, why: str) -> None:
        """Keep why a browser's sign-in was refused for its sign-in page; the oldest of many are let go (a
        browser without a cookie is new at every request, so anyone could make them pile up)."""
        _put_newest(self.refusals, browser_id, why)

    def person(self, sign_in: SignIn, principal: Principal) -> str:
        """Whom the board remembers choices for: the provider's pseudonym, else one of the token's subject."""
        return sign_in.person or pseudonym(self._pseudonym_key, "token", principal.sub)

    @property
    def wait_target_s(self) -> float:
        return self.settings.dashboard.wait_target_s

    async def read_once(self, token: str, path: str, version: int) -> Any:
        """GET `path` once for all the tabs of one sign-in that ask for it having seen the same `version`
        of what changed: twenty tabs on one page cost one request, not twenty, and none gets an older
        answer than what it has seen."""
        key = (hashlib.sha256(token.encode()).hexdigest(), path, version)
        task = self._reads.get(key)
        if task is None:
            task = self._reads[key] = asyncio.create_task(self._read(token, path))
            # kept a moment for the tabs whose renders come a little later
            task.add_done_callback(lambda _: asyncio.get_running_loop().call_later(
                SHARED_READ_S, self._reads.pop, key, None))
        return await asyncio.shield(task)

    async def _read(self, token: str, path: str) -> Any:
        async with BackendClient(self.backend_url, token) as http:
            return await http.get(path)

    async def capabilities(self) -> Capabilities | None:
        """What the backend offers, or None while it cannot be reached."""
        if time.monotonic() - self._capabilities_at > CAPABILITIES_TTL_S:
            try:
                async with BackendClient(self.backend_url) as client:
                    self._capabilities = await client.capabilities()
                self._capabilities_at = time.monotonic()
            except BackendError:
                return self._capabilities
        return self._capabilities


@dataclass
class Viewer:
    """One tab of a signed-in user: who they are, their shared live connection, and HTTP with their token."""

    dashboard: Dashboard
    browser_id: str
    sign_in: SignIn
    principal: Principal
    live: LiveConnection
    capabilities: Capabilities | None  # None: the backend could not be reached to ask
    sites: SiteBook  # the viewer's sites' settings: time zones, wait targets, counters

    @property
    def token(self) -> str:
        """The sign-in's access token now: refreshed in place while the tab stays open."""
        return self.sign_in.access_token

    @property
    def person(self) -> str:
        return self.dashboard.person(self.sign_in, self.principal)

    def http(self, timeout_s: float = 10.0) -> BackendClient:
        """The backend with this tab's token; refused once the person signed out (in another tab too)."""
        if self.sign_in.signed_out:
            raise BackendError("signed out: sign in again", 401)
        return BackendClient(self.dashboard.backend_url, self.token, timeout_s)

    def offers(self, method: str, path: str) -> bool:
        return self.capabilities is not None and self.capabilities.has(method, path)

    def on_change(self, topic: str, render: Callable[[], None]) -> Coalescer:
        """Re-render `render` when `topic` changes, at most four times a second, for as long as the tab
        lives."""
        coalescer = Coalescer(render)
        stop = self.live.listen(topic, coalescer.changed)

        def close() -> None:
            stop()
            coalescer.close()

        ui.context.client.on_delete(close)
        return coalescer


def sign_in_redirect() -> RedirectResponse:
    """To the sign-in page, which shows a person signed in whose groups give them no role why they see
    nothing."""
    return RedirectResponse("/signin", status_code=303)


async def current_viewer(dashboard: Dashboard) -> Viewer | None:
    """The signed-in viewer of this tab, or None: the page then answers with `sign_in_redirect()`."""
    browser_id = app.storage.browser["id"]
    sign_in = dashboard.sessions.current(browser_id)
    if sign_in is None:
        return None
    token = sign_in.access_token
    principal = Principal.from_token(token)
    if not principal.may_read:
        return None
    capabilities = await dashboard.capabilities()
    async with BackendClient(dashboard.backend_url, token) as http:
        sites = await load_site_book(http, capabilities is not None and capabilities.has("GET", SITES),
                                     principal.sites)
    live = dashboard.live.acquire(token, lambda: sign_in.access_token)
    ui.context.client.on_delete(lambda: dashboard.live.release(token))
    return Viewer(dashboard=dashboard, browser_id=browser_id, sign_in=sign_in, principal=principal, live=live,
                  capabilities=capabilities, sites=sites)
