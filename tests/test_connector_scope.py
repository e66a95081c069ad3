"""A connector's scope ends at its data (CONTRACT section 9, issue 13), on real Postgres, NATS and a backend:
a journey's site is the latest its owner (the system of its earliest event) said, whatever other systems claim
and whatever arrives first, with nothing refused for a legitimate claim; a heartbeat counts for the system
the connector is authenticated as, whatever `connector:<name>` it names, leaving the victim's heartbeats and
failures as they were."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import asyncpg
import pytest

from tests.support.connector_double import heartbeat
from tests.support.events import cloud_event, publish
from tests.support.waits import eventually

T0 = datetime.now(UTC) - timedelta(minutes=30)


async def state(pool: asyncpg.Pool, refs: list[str], systems: list[str]) -> dict[str, Any]:
    """What an attack must not change: the journeys of `refs`, their references, the heartbeats of `systems`
    and every failure about these references or systems."""
    journeys = await pool.fetch(
        "SELECT j.id, j.site, j.stage, j.state::text, j.updated_at FROM journeys j"
        " WHERE j.id IN (SELECT journey_id FROM journey_refs WHERE ref = ANY($1::text[])) ORDER BY j.id",
        refs,
    )
    mapped = await pool.fetch(
        "SELECT ref, journey_id FROM journey_refs WHERE ref = ANY($1::text[]) ORDER BY ref", refs
    )
    beats = await pool.fetch(
        "SELECT * FROM heartbeats WHERE system = ANY($1::text[]) ORDER BY system, connector", systems
    )
    failures = await pool.fetch(
        "SELECT id, kind, status, event_id FROM failures WHERE subject = ANY($1::text[])"
        " OR system = ANY($2::text[]) ORDER BY id",
        refs,
        systems,
    )
    return {
        "journeys": [dict(r) for r in journeys],
        "refs": [dict(r) for r in mapped],
        "heartbeats": [dict(r) for r in beats],
        "failures": [dict(r) for r in failures],
    }


async def applied(pool: asyncpg.Pool, event: dict[str, Any]) -> bool:
    return bool(
        await pool.fetchval(
            "SELECT count(*) FROM events WHERE source = $1 AND id = $2", event["source"], event["id"]
        )
    )


async def site_of(pool: asyncpg.Pool, ref: str) -> str | None:
    return await pool.fetchval(
        "SELECT j.site FROM journeys j JOIN journey_refs r ON r.journey_id = j.id WHERE r.ref = $1", ref
    )


async def journey_ids(pool: asyncpg.Pool, refs: list[str]) -> set[Any]:
    rows = await pool.fetch("SELECT journey_id FROM journey_refs WHERE ref = ANY($1::text[])", refs)
    return {r["journey_id"] for r in rows}


async def failures_about(pool: asyncpg.Pool, events: list[dict[str, Any]]) -> int:
    return await pool.fetchval(
        "SELECT count(*) FROM failures WHERE event_id = ANY($1::text[])", [e["id"] for e in events]
    )


async def publish_applied(pool: asyncpg.Pool, js, events: list[dict[str, Any]]) -> None:
    """Publish one at a time, each applied before the next is sent: the arrival order is the list's."""
    for event in events:
        await publish(js, event)
        await eventually(partial(applied, pool, event))


@pytest.mark.parametrize("order", ["booking_first", "ticket_first"])
async def test_a_foreign_site_claim_never_moves_a_journey_whatever_arrives_first(
    backend, js, pool, uid, order
):
    """The queue links its ticket at site b to a booking the appointment system placed at site a: the journey
    stays at a, in either arrival order, and nothing is refused; only the owner moves it."""
    site_a, site_b, site_c = f"a-{uid}", f"b-{uid}", f"c-{uid}"
    booking, ticket = f"appointments:A-{uid}", f"queue:T-{uid}"
    booked = cloud_event(
        "appointment.booked",
        booking,
        {"site": site_a, "service": "passport", "channel": "web", "slot_start": T0.isoformat()},
        time=T0,
    )
    issued = cloud_event(
        "ticket.issued",
        ticket,
        {"site": site_b, "ticket": "T-1", "queue_name": "main", "links": [booking]},
        time=T0 + timedelta(minutes=1),
    )
    await publish_applied(pool, js, [booked, issued] if order == "booking_first" else [issued, booked])
    assert len(await journey_ids(pool, [booking, ticket])) == 1, "the link joined them"
    assert await site_of(pool, ticket) == site_a, "the queue's word does not move the appointment's journey"

    # a later ticket event, still at b, moves nothing either
    called = cloud_event(
        "ticket.called", ticket, {"site": site_b, "counter": "C1"}, time=T0 + timedelta(minutes=2)
    )
    await publish_applied(pool, js, [called])
    assert await site_of(pool, booking) == site_a

    # the appointment system moves its own journey, references and all
    moved = cloud_event(
        "appointment.rescheduled",
        booking,
        {"site": site_c, "slot_start": T0.isoformat()},
        time=T0 + timedelta(minutes=3),
    )
    await publish_applied(pool, js, [moved])
    assert await site_of(pool, booking) == await site_of(pool, ticket) == site_c
    assert await failures_about(pool, [booked, issued, called, moved]) == 0


@pytest.mark.parametrize("placed_first", ["booking", "walk_in"])
@pytest.mark.parametrize("link_first", [False, True])
async def test_a_link_across_sites_joins_journeys_at_the_site_of_the_earliest_event(
    backend, js, pool, uid, placed_first, link_first
):
    """A booking at a and a walk-in at b, joined by a third system's link that names site c: one journey, at
    the site of whichever system's event is earliest, never the linker's, in any arrival order; nothing
    refused."""
    site_a, site_b, site_c = f"a-{uid}", f"b-{uid}", f"c-{uid}"
    booking, walk_in, customer = f"appointments:A-{uid}", f"queue:W-{uid}", f"crm:C-{uid}"
    booked_at, walked_in_at = (T0, T0 + timedelta(minutes=1))[:: 1 if placed_first == "booking" else -1]
    places = [
        cloud_event(
            "appointment.booked",
            booking,
            {"site": site_a, "service": "passport", "channel": "web", "slot_start": T0.isoformat()},
            time=booked_at,
        ),
        cloud_event("customer.arrived", walk_in, {"site": site_b}, time=walked_in_at),
    ]
    link = cloud_event(
        "customer.priority_changed",
        customer,
        {"site": site_c, "priority": "high", "links": [booking, walk_in]},
        time=T0 + timedelta(minutes=2),
    )
    await publish_applied(pool, js, [link, *places] if link_first else [*places, link])
    assert len(await journey_ids(pool, [booking, walk_in, customer])) == 1
    expected = site_a if placed_first == "booking" else site_b
    assert {await site_of(pool, r) for r in (booking, walk_in, customer)} == {expected}
    assert await failures_about(pool, [*places, link]) == 0


@pytest.mark.parametrize("victim_upstream, claimed", [("down", "up"), ("up", "down")])
async def test_a_heartbeat_counts_for_the_publishing_system_only(
    api, backend, js, pool, token, uid, victim_upstream, claimed
):
    """lab_rogue's connector names lab_scope's connector in its heartbeats, over NATS and over HTTP: lab_scope
    looks neither alive nor dead because of it."""
    victim, rogue, name = "lab_scope", "lab_rogue", f"scope-{uid}"
    reader = {"Authorization": f"Bearer {token('sre')}"}

    async def status(system: str, wanted: str) -> dict[str, Any] | None:
        items = (await api.get("/api/v1/integrations", headers=reader)).json()["items"]
        item = next((i for i in items if i["system"] == system), None)
        return item if item and item["status"] == wanted else None

    victim_status = "down" if victim_upstream == "down" else "up"
    try:
        own = heartbeat(victim, name, victim_upstream, age=timedelta(seconds=5))
        await publish(js, own)
        await eventually(lambda: status(victim, victim_status))
        before = await state(pool, [], [victim])

        over_nats = heartbeat(rogue, name, claimed)
        await publish(js, over_nats)
        over_http = heartbeat(rogue, name, claimed)
        connector = {"Authorization": f"Bearer {token('connector', system=rogue)}"}
        assert (await api.post("/api/v1/events", json=over_http, headers=connector)).status_code == 202
        for event in (over_nats, over_http):
            await eventually(partial(applied, pool, event))
        # the rogue's heartbeats are its own: a row of lab_rogue, labelled with the name it gave
        assert {
            (r["system"], r["connector"], r["upstream"])
            for r in await pool.fetch("SELECT * FROM heartbeats WHERE connector = $1", name)
        } == {(victim, name, victim_upstream), (rogue, name, claimed)}
        assert await state(pool, [], [victim]) == before
        assert await status(victim, victim_status), "the victim's health is its own connector's"
    finally:
        await pool.execute("DELETE FROM heartbeats WHERE connector = $1", name)


async def test_a_connector_limited_to_a_site_reports_its_upstream_as_itself_alone(
        api, backend, js, pool, token, uid):
    """A connector limited to north names south's connector in heartbeats saying its upstream is down, dated
    ahead so that south's later ones would lose, on its site's subject and over HTTP: they are filed as its
    own (`<name>@north`), seen no later than they arrived, and the system stays up on south's word."""
    system, name, north = "lab_scope", f"south-desk-{uid}", f"north-{uid}"
    reader = {"Authorization": f"Bearer {token('sre')}"}

    async def status() -> str:
        items = (await api.get("/api/v1/integrations", headers=reader)).json()["items"]
        return next(i["status"] for i in items if i["system"] == system)

    try:
        own = heartbeat(system, name, "up")
        await publish(js, own)
        await eventually(partial(applied, pool, own))
        ahead = timedelta(seconds=-200)  # `age` backwards: dated 200 s from now
        over_nats = heartbeat(system, name, "down", age=ahead)
        await publish(js, over_nats, subject=f"svc.events.{system}.connector.heartbeat.{north}")
        over_http = heartbeat(system, name, "down", age=ahead)
        limited = {"Authorization": f"Bearer {token('connector', [north], system=system)}"}
        assert (await api.post("/api/v1/events", json=over_http, headers=limited)).status_code == 202
        for event in (over_nats, over_http):
            await eventually(partial(applied, pool, event))
        rows = await pool.fetch("SELECT connector, upstream, seen_at <= now() AS not_ahead FROM heartbeats"
                                " WHERE system = $1 AND connector LIKE $2", system, f"{name}%")
        assert {(r["connector"], r["upstream"], r["not_ahead"]) for r in rows} == {
            (name, "up", True), (f"{name}@{north}", "down", True)}
        assert await status() == "up"
    finally:
        await pool.execute("DELETE FROM heartbeats WHERE connector LIKE $1", f"{name}%")
