"""A batch costs Postgres work linear in its size (CONTRACT section 9: every input costs time linear in its
size). Judged by the rows the apply's write statement handles, which `EXPLAIN ANALYZE` counts exactly,
not by timing: four times the batch must handle about four times the rows, where a per-row scan of the
batch's own new references (the write's references of each journey and command, before) made it sixteen.
A chain of links is followed once per batch. And the journeys' ids, which decide the journey a link keeps,
keep the order they were made in.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest

from backend import db
from backend.ingest import apply
from backend.ingest.validate import Accepted, validate
from backend.routing.rules import DEFAULT_RULES, load_rules
from switchboard.events import SEED_SYSTEMS
from tests.support.events import cloud_event
from tools.bench.ingest import make_events

SMALL = 150
COUNTED = ("Actual Rows", "Rows Removed by Filter", "Rows Removed by Join Filter")


class RecordingConnection(asyncpg.Connection):
    """A real connection that keeps the arguments of the apply's write, to explain the same statement."""

    write_args: tuple[Any, ...] = ()

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> list[asyncpg.Record]:
        if query == apply._WRITE:
            self.write_args = args
        return await super().fetch(query, *args, **kwargs)


@pytest.fixture
async def conn(server_urls: dict[str, str]) -> AsyncIterator[RecordingConnection]:
    """A database of the test's own: the plan's row counts depend on nothing else stored."""
    name = f"switchboard_linear_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_urls["database_url"])
    await admin.execute(f'CREATE DATABASE "{name}"')
    connection = await asyncpg.connect(server_urls["database_url"].rsplit("/", 1)[0] + "/" + name,
                                       connection_class=RecordingConnection)
    try:
        await db.migrate(connection)
        yield connection
    finally:
        await connection.close()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


def journeys(count: int, prefix: str) -> list[Accepted]:
    """The events of `count` whole journeys, booked to completed: two references each, and a command."""
    out = []
    for _, body, _ in make_events(6 * count + count // 10, prefix=prefix):
        accepted = validate(body, max_bytes=65_536, known_systems=SEED_SYSTEMS)
        assert isinstance(accepted, Accepted), accepted
        out.append(accepted)
    return out


def rows_handled(plan: dict[str, Any]) -> int:
    """Every row every node of the plan produced or filtered out, over all its loops (EXPLAIN gives both
    per loop)."""
    seen = sum(plan.get(key, 0) for key in COUNTED)
    return int(seen * plan["Actual Loops"]) + sum(rows_handled(child) for child in plan.get("Plans", []))


async def explain_generic(conn: asyncpg.Connection, query: str, args: tuple[Any, ...]) -> str:
    """EXPLAIN ANALYZE of `query` under the plan the apply worker runs: generic, its parameters unknown to
    the planner (EXPLAIN of a parameterised statement would plan it for these values)."""
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    parameters = []
    for parameter, value in zip((await conn.prepare(query)).get_parameters(), args, strict=True):
        kind = await conn.fetchval("SELECT format_type($1::oid, NULL)", parameter.oid)
        parameters.append(await conn.fetchval(f"SELECT quote_literal($1::{kind}::text) || '::{kind}'", value))
    await conn.execute(f"PREPARE explained AS {query}")
    try:
        values = ", ".join(parameters)
        return await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE explained({values})")
    finally:
        await conn.execute("DEALLOCATE explained")


async def write_rows(conn: RecordingConnection, events: list[Accepted]) -> tuple[int, int]:
    """The rows the batch's write handles, and the commands it wrote; nothing of it is kept."""
    rules = load_rules(DEFAULT_RULES, SEED_SYSTEMS)
    for explain in (False, True):
        tx = conn.transaction()
        await tx.start()
        try:
            if explain:  # the same statement, planned as the apply worker plans it, on the same empty tables
                [plan] = msgspec.json.decode(await explain_generic(conn, apply._WRITE, conn.write_args))
            else:
                await apply.apply_events(conn, events, rules=rules)
                commands = await conn.fetchval("SELECT count(*) FROM commands")
        finally:
            await tx.rollback()
    return rows_handled(plan["Plan"]), commands


async def test_four_times_the_batch_makes_the_write_handle_about_four_times_the_rows(conn):
    small, small_commands = await write_rows(conn, journeys(SMALL, "svc.events.small"))
    large, large_commands = await write_rows(conn, journeys(4 * SMALL, "svc.events.large"))
    assert small_commands == SMALL and large_commands == 4 * SMALL  # the commands' references are counted too
    assert large / small < 5, f"{small} rows for {SMALL} journeys, {large} for {4 * SMALL}"


async def test_a_chain_of_links_in_one_batch_ends_in_one_journey_holding_every_reference(conn):
    """Each link joins the journey of the ticket before: every earlier lookup walks to the same survivor
    (links are followed once and then short-cut, so the chain costs its length, not its square)."""
    tickets = [f"queue:T-{i:04d}-{uuid.uuid4().hex[:6]}" for i in range(60)]
    bodies = [cloud_event("customer.arrived", ref, {"site": "chain"}) for ref in tickets]
    bodies += [cloud_event("ticket.issued", tickets[i], {"site": "chain", "ticket": f"T-{i}",
                                                         "queue_name": "main", "links": [tickets[i + 1]]})
               for i in reversed(range(len(tickets) - 1))]
    async with conn.transaction():
        outcome = await apply.apply_events(conn, accepted(bodies),
                                           rules=load_rules(DEFAULT_RULES, SEED_SYSTEMS))
    [journey] = outcome.journeys
    assert sorted(journey.refs) == sorted(tickets)
    assert await conn.fetchval("SELECT count(DISTINCT journey_id) FROM journey_refs") == 1
    assert await conn.fetchval("SELECT count(DISTINCT journey_id) FROM events") == 1


def test_journey_ids_made_in_one_millisecond_keep_the_order_they_were_made_in():
    ids = [apply.time_ordered_id() for _ in range(5_000)]  # many share a millisecond
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert {i.version for i in ids} == {7} and {i.variant for i in ids} == {uuid.RFC_4122}


async def test_of_two_journeys_one_batch_created_a_later_link_keeps_the_one_whose_event_came_first(conn):
    """Both journeys carry the batch's clock: their ids alone say which came first."""
    rules = load_rules(DEFAULT_RULES, SEED_SYSTEMS)
    for attempt in range(20):  # a random order would keep the wrong one about half the time
        booking, walk_in = f"appointments:A-{uuid.uuid4().hex[:8]}", f"queue:T-{uuid.uuid4().hex[:8]}"
        booked_data = {"site": "order", "service": "tax", "channel": "web",
                       "slot_start": "2026-12-05T09:00:00+00:00"}
        first = [cloud_event("appointment.booked", booking, booked_data),
                 cloud_event("customer.arrived", walk_in, {"site": "order"})]
        link = [cloud_event("ticket.issued", walk_in, {"site": "order", "ticket": "T-1", "queue_name": "main",
                                                       "links": [booking]})]
        created = await apply.apply_events(conn, accepted(first), rules=rules)
        booked = next(j.id for j in created.journeys if booking in j.refs)
        arrived = next(j.id for j in created.journeys if walk_in in j.refs)
        joined = await apply.apply_events(conn, accepted(link), rules=rules)
        assert [j.id for j in joined.journeys] == [booked], attempt
        assert [(m.id, m.merged_into) for m in joined.merged_away] == [(arrived, booked)], attempt


def accepted(bodies: list[dict[str, Any]]) -> list[Accepted]:
    out = []
    for body in bodies:
        event = validate(msgspec.json.encode(body), max_bytes=65_536, known_systems=SEED_SYSTEMS)
        assert isinstance(event, Accepted), event
        out.append(event)
    return out
