"""The identity provider's signing keys, kept fresh in the background (SWITCHBOARD_JWKS_URL).

Verifying a token never waits for the network: it looks its `kid` up in the keys last fetched. A
`kid` not among them asks for a refresh, which the background task runs at most once per cooldown,
so a stream of made-up `kid`s costs the provider one fetch per cooldown. When the provider cannot be
reached the keys last fetched keep serving; they are refetched every `refresh_s` besides.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
import jwt

from switchboard.waits import wait_set

log = logging.getLogger(__name__)


class JwksKeys:
    def __init__(self, url: str, *, cooldown_s: float, refresh_s: float, timeout_s: float = 5.0) -> None:
        self.url = url
        self.cooldown_s = cooldown_s
        self.refresh_s = refresh_s
        self.timeout_s = timeout_s
        self.fetches = 0  # fetches attempted, for the log and the tests
        self._keys: dict[str, jwt.PyJWK] = {}
        self._wanted = asyncio.Event()

    def key(self, kid: str) -> jwt.PyJWK | None:
        """The key named `kid`, if fetched; an unknown one asks the background task for a refresh."""
        key = self._keys.get(kid)
        if key is None:
            self._wanted.set()
        return key

    async def refresh(self) -> bool:
        """Fetch the key set; on any failure keep the keys there are. True if the keys were replaced."""
        self.fetches += 1
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False) as client:
                response = await client.get(self.url)
                response.raise_for_status()
            keys = jwt.PyJWKSet.from_dict(response.json())
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
            log.warning("JWKS refresh from %s failed (%s); keeping the %d keys fetched before", self.url,
                        type(exc).__name__, len(self._keys))
            return False
        self._keys = {key.key_id: key for key in keys.keys if key.key_id}
        return True

    async def run(self) -> None:
        """Refresh every `refresh_s`, or sooner when asked, never more often than every `cooldown_s`."""
        while True:
            await wait_set(self._wanted, self.refresh_s)
            self._wanted.clear()
            await self.refresh()
            await asyncio.sleep(self.cooldown_s)  # a kid asked for meanwhile is refreshed right after it
