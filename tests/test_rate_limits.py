"""The rate limits' counts, per client in the replica's memory, are let go once they expire."""

from __future__ import annotations

import asyncio

from litestar import Litestar
from litestar.stores.memory import MemoryStore

from backend.rate_limits import STORE, forget_expired_counts
from tests.support.waits import eventually


async def test_expired_counts_are_forgotten_without_their_client_coming_back():
    app = Litestar(route_handlers=[])
    store = app.stores.get(STORE)
    assert isinstance(store, MemoryStore)
    for n in range(100):  # clients seen once
        await store.set(f"webhook:10.0.{n}.1", b"1", expires_in=1)
    await store.set("webhook:10.9.9.9", b"1", expires_in=3600)
    forgetting = asyncio.create_task(forget_expired_counts(app, every_s=0.1))

    async def only_the_live_count_kept() -> bool:
        # what it holds, read without `get` (which drops an expired count it reads)
        return set(store._store) == {"webhook:10.9.9.9"}

    try:
        await eventually(only_the_live_count_kept)
    finally:
        forgetting.cancel()
