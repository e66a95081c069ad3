"""A connector's scope ends at its data (CONTRACT section 9, issue 13), attacked on real Postgres, NATS and a
backend: a journey moves to another site, or is merged with one at another site, only by an event of the
system that owns its site; a heartbeat counts for the system the connector is authenticated as, whatever
`connector:<name>` it names. Every attack leaves journeys, references, heartbeats and failures as they were,
but for the one failure that records the refusal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
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


async def refusal(pool: asyncpg.Pool, event: dict[str, Any]) -> asyncpg.Record:
    async def recorded() -> asyncpg.Record | None:
        return await pool.fetchrow(
            "SELECT * FROM failures WHERE event_source = $1 AND event_id = $2", event["source"], event["id"]
        )

    return await eventually(recorded)


async def site_of(pool: asyncpg.Pool, ref: str) -> str | None:
    return await pool.fetchval(
        "SELECT j.site FROM journeys j JOIN journey_refs r ON r.journey_id = j.id WHERE r.ref = $1", ref
    )


async def attack_refused(
    pool: asyncpg.Pool, js, event: dict[str, Any], refs: list[str], systems: list[str]
) -> asyncpg.Record:
    before = await state(pool, refs, systems)
    await publish(js, event)
    failure = await refusal(pool, event)
    assert failure["kind"] == "unauthorized_source", failure["reason"]
    assert not await applied(pool, event)
    after = await state(pool, refs, systems)
    after["failures"] = [f for f in after["failures"] if f["event_id"] != event["id"]]
    assert after == before
    return failure


async def test_a_journey_moves_site_only_by_the_system_that_placed_it(backend, js, pool, uid):
    site_a, site_b = f"a-{uid}", f"b-{uid}"
    booking = f"appointments:A-{uid}"
    booked = cloud_event(
        "appointment.booked",
        booking,
        {"site": site_a, "service": "passport", "channel": "web", "slot_start": T0.isoformat()},
        time=T0,
    )
    await publish(js, booked)
    await eventually(lambda: applied(pool, booked))

    # the queue, linking its ticket to the booking, would take the journey to its own site
    ticket = cloud_event(
        "ticket.issued",
        f"queue:T-{uid}",
        {"site": site_b, "ticket": "T-1", "queue_name": "main", "links": [booking]},
        time=T0 + timedelta(minutes=1),
    )
    failure = await attack_refused(pool, js, ticket, [booking, f"queue:T-{uid}"], ["queue"])
    assert failure["reason"] == (
        f"the journey at site {site_a!r} belongs to appointments, which placed it there;"
        f" queue may not move it to site {site_b!r}"
    )
    assert await site_of(pool, f"queue:T-{uid}") is None, "the refused link joined nothing"

    # even an older claim of another site is refused, though it would not win the merge
    stale = cloud_event(
        "customer.arrived",
        f"queue:O-{uid}",
        {"site": site_b, "links": [booking]},
        time=T0 - timedelta(minutes=5),
    )
    await attack_refused(pool, js, stale, [booking, f"queue:O-{uid}"], ["queue"])

    # at the journey's own site the queue takes part as usual
    same_site = cloud_event(
        "ticket.issued",
        f"queue:T-{uid}",
        {"site": site_a, "ticket": "T-1", "queue_name": "main", "links": [booking]},
        time=T0 + timedelta(minutes=2),
    )
    await publish(js, same_site)
    await eventually(lambda: applied(pool, same_site))

    # the appointment system moves its own journey, references and all
    moved = cloud_event(
        "appointment.rescheduled",
        booking,
        {"site": site_b, "slot_start": T0.isoformat()},
        time=T0 + timedelta(minutes=3),
    )
    await publish(js, moved)
    await eventually(lambda: applied(pool, moved))
    assert await site_of(pool, booking) == await site_of(pool, f"queue:T-{uid}") == site_b


async def test_a_link_never_merges_journeys_at_different_sites_unless_the_sender_owns_what_moves(
    backend, js, pool, uid
):
    site_a, site_b = f"a-{uid}", f"b-{uid}"
    booking, walk_in, other_booking = f"appointments:A-{uid}", f"queue:W-{uid}", f"appointments:B-{uid}"
    for event in (
        cloud_event(
            "appointment.booked",
            booking,
            {"site": site_a, "service": "passport", "channel": "web", "slot_start": T0.isoformat()},
            time=T0,
        ),
        cloud_event("customer.arrived", walk_in, {"site": site_b}, time=T0),
        cloud_event(
            "appointment.booked",
            other_booking,
            {"site": site_b, "service": "licence", "channel": "web", "slot_start": T0.isoformat()},
            time=T0,
        ),
    ):
        await publish(js, event)
        await eventually(lambda event=event: applied(pool, event))
    refs = [booking, walk_in, other_booking]

    # a third system joins the appointment at a with the walk-in at b: one of them would change site
    crm = cloud_event(
        "customer.priority_changed",
        f"crm:C-{uid}",
        {"site": site_a, "priority": "high", "links": [booking, walk_in]},
        time=T0 + timedelta(minutes=1),
    )
    failure = await attack_refused(pool, js, crm, [*refs, f"crm:C-{uid}"], ["crm"])
    assert "; crm may not merge it with a journey at site" in failure["reason"]
    # the queue owns its walk-in, not the appointment: its link would move the one it does not own
    queue = cloud_event(
        "ticket.issued",
        walk_in,
        {"site": site_b, "ticket": "W-1", "queue_name": "main", "links": [booking]},
        time=T0 + timedelta(minutes=1),
    )
    await attack_refused(pool, js, queue, refs, ["queue"])
    assert len({await site_of(pool, r) for r in refs}) == 2, "nothing was merged"

    # the appointment system owns both of its bookings: it may join them, and the one it moves follows
    joined = cloud_event(
        "appointment.rescheduled",
        booking,
        {"site": site_a, "slot_start": T0.isoformat(), "links": [other_booking]},
        time=T0 + timedelta(minutes=2),
    )
    await publish(js, joined)
    await eventually(lambda: applied(pool, joined))
    journey_ids = await pool.fetch(
        "SELECT DISTINCT journey_id FROM journey_refs WHERE ref = ANY($1::text[])", [booking, other_booking]
    )
    assert len(journey_ids) == 1 and await site_of(pool, other_booking) == site_a


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
            await eventually(lambda event=event: applied(pool, event))
        # the rogue's heartbeats are its own: a row of lab_rogue, labelled with the name it gave
        assert {
            (r["system"], r["connector"], r["upstream"])
            for r in await pool.fetch("SELECT * FROM heartbeats WHERE connector = $1", name)
        } == {(victim, name, victim_upstream), (rogue, name, claimed)}
        assert await state(pool, [], [victim]) == before
        assert await status(victim, victim_status), "the victim's health is its own connector's"
    finally:
        await pool.execute("DELETE FROM heartbeats WHERE connector = $1", name)
