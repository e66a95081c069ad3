"""The `failures` topic, fed by Postgres rather than the NATS bus.

`failures.services.failure_changed` notifies `switchboard_failures` inside the transaction that
changes a failure, so Postgres tells every replica once that transaction commits, and never for one
rolled back. Each replica reads the failures once per round and delivers them to its own clients
only: the notification already reached every replica, so the bus would deliver them twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
import msgspec

from backend.failures.services import CHANGES_CHANNEL, get_failures
from backend.live.hub import LiveHub
from backend.live.schemas import BusUpdate

log = logging.getLogger(__name__)

_RECONNECT_S = 1.0
_encode = msgspec.json.encode


class FailureFeed:
    def __init__(self, pool: asyncpg.Pool, hub: LiveHub) -> None:
        self.pool = pool
        self.hub = hub
        self._ids: set[int] = set()
        self._changed = asyncio.Event()

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._ids.update(msgspec.json.decode(payload)["ids"])
        self._changed.set()

    async def run(self) -> None:
        while True:
            try:
                async with self.pool.acquire() as listener:
                    await listener.add_listener(CHANGES_CHANNEL, self._on_notify)
                    try:
                        await self._deliver_while_connected(listener)
                    finally:
                        with contextlib.suppress(Exception):
                            await listener.remove_listener(CHANGES_CHANNEL, self._on_notify)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # changes made while Postgres was away reach clients with their next snapshot
                log.warning("live failures feed lost Postgres (%s); reconnecting", type(exc).__name__)
                await asyncio.sleep(_RECONNECT_S)

    async def _deliver_while_connected(self, listener: asyncpg.Connection) -> None:
        while not listener.is_closed():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=5)  # wake up to notice a lost connection
            if not self._changed.is_set():
                continue
            self._changed.clear()
            ids, self._ids = sorted(self._ids), set()
            async with self.pool.acquire() as conn:
                failures = await get_failures(conn, ids)
            for failure in failures:
                self.hub.fan_out("failures", BusUpdate(site=failure.site, key=str(failure.id),
                                                       data=msgspec.Raw(_encode(failure))))
        raise OSError("the listening connection closed")
