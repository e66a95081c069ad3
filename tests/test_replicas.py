"""Two backend replicas share the durable consumer: events of the same journeys applied concurrently,
with redeliveries, give exactly the reference journeys (no lost update, no duplicate journey)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import httpx
import msgspec
import pytest

from backend.journeys import services
from tests.support.backends import own_stack
from tests.support.events import cloud_event
from tests.support.waits import eventually
from tools.reference_merge import expected_journey, observed


@pytest.fixture
async def replicas(server_urls, workdir):
    """Two replicas alone on their own NATS and database: the session's backend must not apply a share of
    the events, or "both took part" would hold even with one of these two idle."""
    async with own_stack(server_urls["database_url"], workdir, replicas=2) as stack:
        yield stack


async def test_two_replicas_apply_shared_journeys_exactly(replicas, uid):
    js, pool = replicas.js, replicas.pool
    rng = random.Random(uid)
    t0 = datetime.now(UTC) - timedelta(hours=1)
    by_journey: dict[str, list[dict]] = {}
    for n in range(40):
        appt, ticket = f"appointments:A{n}-{uid}", f"queue:T{n}-{uid}"
        at = t0 + timedelta(seconds=n)
        by_journey[ticket] = [
            cloud_event("appointment.booked", appt, {"site": "rep", "service": "tax", "channel": "phone",
                                                     "slot_start": at.isoformat()}, time=at),
            cloud_event("customer.arrived", ticket, {"site": "rep", "links": [appt]},
                        time=at + timedelta(minutes=1)),
            cloud_event("customer.priority_changed", f"crm:P{n}-{uid}",
                        {"site": "rep", "priority": rng.choice(["high", "normal"]), "links": [appt]},
                        time=at + timedelta(minutes=2)),
            cloud_event("ticket.issued", ticket, {"site": "rep", "ticket": f"T{n}", "queue_name": "main"},
                        time=at + timedelta(minutes=2)),
            cloud_event("ticket.called", ticket, {"site": "rep", "counter": f"C{n % 4}"},
                        time=at + timedelta(minutes=5)),
            cloud_event("service.completed", ticket, {"site": "rep", "outcome": "DONE"},
                        time=at + timedelta(minutes=9)),
        ]
    deliveries = [e for events in by_journey.values() for e in events for _ in range(rng.randint(1, 2))]
    rng.shuffle(deliveries)
    for i, event in enumerate(deliveries):
        # a fresh Nats-Msg-Id per delivery: only Postgres can recognise these duplicates
        await js.publish(f"svc.events.{event['source'][1:]}.{event['type']}", msgspec.json.encode(event),
                         headers={"Nats-Msg-Id": f"{uid}-{i}"})

    ids = [e["id"] for events in by_journey.values() for e in events]

    async def all_applied():
        return await pool.fetchval("SELECT count(*) FROM events WHERE id = ANY($1::text[])", ids) == len(ids)

    await eventually(all_applied)
    async with pool.acquire() as conn:
        for ticket, events in by_journey.items():
            links = {r for e in events for r in e["data"].get("links", [])}
            refs = sorted({e["subject"] for e in events} | links)
            journey_ids = {r["journey_id"] for r in await conn.fetch(
                "SELECT journey_id FROM journey_refs WHERE ref = ANY($1::text[])", refs)}
            assert len(journey_ids) == 1, ticket
            journey = await services.get_journey(conn, journey_ids.pop())
            assert journey is not None
            assert observed(journey) == expected_journey(events)
            assert len(journey.timeline) == len(events)
    for process in replicas.backends:
        assert "Traceback" not in process.log_path.read_text()
        async with httpx.AsyncClient(base_url=process.url) as client:
            metrics = (await client.get("/metrics")).text
        applied = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                      if line.startswith("switchboard_events_applied_total{"))
        assert applied > 0, "both replicas took part"
