"""Two replicas applying events of one journey at once (backend/ingest/apply.py): the later batch waits for
the earlier one's advisory locks, and the statement that resolves its references runs after they were
granted, so it sees what the earlier batch committed. One journey per reference, whatever the timing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg

from backend.ingest import apply
from backend.ingest.apply import Outcome
from backend.ingest.validate import Accepted
from backend.routing.rules import DEFAULT_RULES, load_rules
from switchboard.events import SEED_SYSTEMS
from tests.support.events import cloud_event
from tests.support.waits import eventually
from tests.test_apply_linear import accepted

RULES = load_rules(DEFAULT_RULES, SEED_SYSTEMS)


@contextlib.asynccontextmanager
async def _connected(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


async def _apply(conn: asyncpg.Connection, batch: list[Accepted]) -> Outcome:
    async with conn.transaction():
        return await apply.apply_events(conn, batch, rules=RULES)


async def test_a_batch_that_waited_for_anothers_locks_joins_the_journey_it_made(settings, pool, uid):
    site, ticket = f"locks-{uid}", f"queue:T-{uid}"
    arrived = accepted([cloud_event("customer.arrived", ticket, {"site": site})])
    issued = accepted([cloud_event("ticket.issued", ticket, {"site": site, "ticket": f"T-{uid}",
                                                             "queue_name": "main"})])
    # connections of its own: the apply's statements stay prepared on a connection, and the shared pool's
    # would carry their plans into other tests (test_apply_worker.py counts them)
    url = settings.database.database_owner_url
    async with _connected(url) as first, _connected(url) as second:
        async with first.transaction():
            made = await apply.apply_events(first, arrived, rules=RULES)
            waiting = asyncio.create_task(_apply(second, issued))

            async def blocked() -> bool:
                return await pool.fetchval(
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1",
                    second.get_server_pid()) is True

            await eventually(blocked)  # on the ticket's advisory lock, before reading any reference
        joined = await waiting
    [journey] = made.journeys
    assert [(j.id, j.refs) for j in joined.journeys] == [(journey.id, [ticket])]
    assert await pool.fetchval("SELECT stage FROM journeys WHERE id = $1", journey.id) == "waiting"
