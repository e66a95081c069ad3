"""A connector limited to sites speaks for its sites alone (docs/security.md, "Trust on the bus"): what it
publishes about a journey another authority placed at another site is applied and kept, but moves neither
the journey's site nor its stage, in either order of arrival; at its own site it runs the journey as any
connector does. Over NATS (the subject's site token), over HTTP (a token limited to sites), and through a
retry of its failure. Real Postgres, NATS and backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from tests.support.database import refusing_site
from tests.support.events import cloud_event, publish
from tests.support.failures import bearer, failures_of, one_failure
from tests.support.waits import eventually


async def _journey(pool: asyncpg.Pool, ref: str) -> tuple[str, str, str | None] | None:
    row = await pool.fetchrow(
        "SELECT j.site, j.stage, j.state->'counter'->>1 AS counter FROM journeys j"
        " JOIN journey_refs r ON r.journey_id = j.id WHERE r.ref = $1", ref)
    return None if row is None else (row["site"], row["stage"], row["counter"])


async def _stored(pool: asyncpg.Pool, *ids: str) -> bool:
    stored = await pool.fetchval("SELECT count(*) FROM events WHERE id = ANY($1::text[])", list(ids))
    return stored == len(ids)


def _issued(ticket: str, site: str, at: datetime) -> dict:
    return cloud_event("ticket.issued", ticket, {"site": site, "ticket": ticket.split(":")[1],
                                                 "queue_name": "main"}, time=at)


def _called(ticket: str, site: str, at: datetime, counter: str) -> dict:
    return cloud_event("ticket.called", ticket, {"site": site, "counter": counter}, time=at)


def _on_site_subject(event: dict) -> str:
    """The subject a connector limited to the event's site publishes it on."""
    return f"svc.events.queue.{event['type']}.{event['data']['site']}"


@pytest.mark.usefixtures("backend")
@pytest.mark.parametrize("foreign_first", [False, True], ids=["placed-first", "foreign-first"])
async def test_a_connector_of_one_site_moves_nothing_of_a_journey_at_another(js, pool, uid, foreign_first):
    north, south, ticket = f"north-{uid}", f"south-{uid}", f"queue:T-{uid}"
    now = datetime.now(UTC)
    placed = _issued(ticket, south, now - timedelta(minutes=2))
    foreign = _called(ticket, north, now - timedelta(minutes=1), "C9")
    for event in (foreign, placed) if foreign_first else (placed, foreign):
        await publish(js, event, subject=_on_site_subject(event))
    await eventually(lambda: _stored(pool, placed["id"], foreign["id"]))
    # applied and kept (its journey's timeline shows it), but the journey stays south's, and waiting
    assert await _journey(pool, ticket) == (south, "waiting", None)
    assert await pool.fetchval("SELECT count(*) FROM failures WHERE site IN ($1, $2)", north, south) == 0

    # south's own connector calls it: that counts
    mine = _called(ticket, south, now, "C1")
    await publish(js, mine, subject=_on_site_subject(mine))
    await eventually(lambda: _stored(pool, mine["id"]))
    assert await _journey(pool, ticket) == (south, "called", "C1")


@pytest.mark.usefixtures("backend")
async def test_at_its_own_site_a_connector_limited_to_it_runs_the_journey(js, pool, uid):
    """A booking by the appointments (not limited to sites) at north: north's queue connector advances it;
    south's changes nothing."""
    north, south = f"north-{uid}", f"south-{uid}"
    booking, ticket = f"appointments:A-{uid}", f"queue:T-{uid}"
    now = datetime.now(UTC)
    await publish(js, cloud_event("appointment.booked", booking, {
        "site": north, "service": "passport", "channel": "web",
        "slot_start": (now + timedelta(hours=1)).isoformat()}, time=now - timedelta(minutes=3)))
    arrived = cloud_event("customer.arrived", ticket, {"site": north, "links": [booking]},
                          time=now - timedelta(minutes=2))
    called = _called(ticket, north, now - timedelta(minutes=1), "C2")
    elsewhere = cloud_event("service.completed", ticket, {"site": south, "outcome": "DONE"}, time=now)
    for event in (arrived, called, elsewhere):
        await publish(js, event, subject=_on_site_subject(event))
    await eventually(lambda: _stored(pool, arrived["id"], called["id"], elsewhere["id"]))
    assert await _journey(pool, booking) == (north, "called", "C2")


@pytest.mark.usefixtures("backend")
async def test_no_rule_fires_on_an_event_that_does_not_count_where_the_journey_sits(js, pool, uid):
    """The v1 rule alerting staff when an ineligible customer arrives: north's arrival at south's journey
    counts for nothing there, so south's queue is not alerted; south's own arrival alerts it."""
    north, south, booking = f"north-{uid}", f"south-{uid}", f"appointments:A-{uid}"
    now = datetime.now(UTC)
    await publish(js, cloud_event("appointment.booked", booking, {
        "site": south, "service": "passport", "channel": "web",
        "slot_start": (now + timedelta(hours=1)).isoformat()}, time=now - timedelta(minutes=3)))
    await publish(js, cloud_event("eligibility.checked", f"core:E-{uid}", {
        "site": south, "result": "failed", "reason_code": "DOCS", "links": [booking]},
        time=now - timedelta(minutes=2)))

    async def alerts() -> int:
        return await pool.fetchval(
            "SELECT count(*) FROM commands c JOIN journey_refs r ON r.journey_id = c.journey_id"
            " WHERE r.ref = $1 AND c.command = 'staff.alert'", booking)

    foreign = cloud_event("customer.arrived", f"queue:T-{uid}", {"site": north, "links": [booking]},
                          time=now - timedelta(minutes=1))
    await publish(js, foreign, subject=_on_site_subject(foreign))
    await eventually(lambda: _stored(pool, foreign["id"]))
    assert await alerts() == 0
    mine = cloud_event("customer.arrived", f"queue:S-{uid}", {"site": south, "links": [booking]}, time=now)
    await publish(js, mine, subject=_on_site_subject(mine))
    assert await eventually(alerts) == 1


async def test_over_http_a_token_limited_to_sites_speaks_for_its_site_alone(api, pool, token, uid):
    north, south, ticket = f"north-{uid}", f"south-{uid}", f"queue:T-{uid}"
    now = datetime.now(UTC)

    async def post(event: dict, site: str) -> None:
        posted = await api.post("/api/v1/events", json=event, headers={
            "Authorization": f"Bearer {token('connector', [site], system='queue')}"})
        assert posted.status_code == 202 and posted.json()["rejected"] == [], posted.text

    placed = _issued(ticket, south, now - timedelta(minutes=2))
    foreign = _called(ticket, north, now - timedelta(minutes=1), "C9")
    await post(placed, south)
    await post(foreign, north)
    await eventually(lambda: _stored(pool, placed["id"], foreign["id"]))
    assert await _journey(pool, ticket) == (south, "waiting", None)
    mine = _called(ticket, south, now, "C1")
    await post(mine, south)
    await eventually(lambda: _stored(pool, mine["id"]))
    assert await _journey(pool, ticket) == (south, "called", "C1")


async def test_a_retried_failure_is_applied_for_its_sender_s_site_alone(api, js, pool, token, uid):
    """North's call of a ticket fails to apply (the database refuses north's journeys for a while); the
    ticket turns out to be south's. Retried, the event applies as its connector sent it: for north alone, so
    the journey stays waiting at south."""
    north, south, ticket = f"north-{uid}", f"south-{uid}", f"queue:T-{uid}"
    now = datetime.now(UTC)
    foreign = _called(ticket, north, now - timedelta(minutes=1), "C9")
    async with refusing_site(pool, north):
        await publish(js, foreign, subject=_on_site_subject(foreign))
        failure = await one_failure(api, bearer(token, "sre", [north]), site=north, kind="apply_error")
    assert failure["sender_sites"] == [north]
    placed = _issued(ticket, south, now - timedelta(minutes=2))
    await publish(js, placed, subject=_on_site_subject(placed))
    await eventually(lambda: _stored(pool, placed["id"]))

    retried = await api.post(f"/api/v1/failures/{failure['id']}/retry", headers=bearer(token, "sre", [north]),
                             json={})
    assert retried.status_code == 200 and retried.json()["outcome"] == "resolved", retried.text
    assert await _stored(pool, foreign["id"])
    assert await _journey(pool, ticket) == (south, "waiting", None)


async def test_a_refusal_names_its_sender_s_sites_however_early_it_was_refused(api, js, pool, token, uid):
    """Refused while it was decoded, before its site was read: a retry (after an upgrade that reads it)
    would still apply it at its sender's site alone."""
    north = f"north-{uid}"
    unreadable = _called(f"queue:T-{uid}", north, datetime.now(UTC), "C" * 500)
    await publish(js, unreadable, subject=_on_site_subject(unreadable))
    failure = await one_failure(api, bearer(token, "sre", [north]), site=north, kind="invalid_event")
    assert failure["sender_sites"] == [north]
    # one sent over HTTP by a token of two sites names both
    east, west = f"east-{uid}", f"west-{uid}"
    sender = {"Authorization": f"Bearer {token('connector', [west, east], system='queue')}"}
    unread = _called(f"queue:U-{uid}", east, datetime.now(UTC), "C" * 500)
    posted = await api.post("/api/v1/events", json=unread, headers=sender)
    assert posted.json()["rejected"][0]["kind"] == "invalid_event", posted.text
    failure = await one_failure(api, bearer(token, "sre", [east]), site=east, kind="invalid_event")
    assert failure["sender_sites"] == [east, west]
    # a sender of every site names none
    anywhere = _called(f"queue:V-{uid}", north, datetime.now(UTC), "C" * 500)
    await publish(js, anywhere)

    async def both():
        items = await failures_of(api, bearer(token, "sre", [north]), site=north, kind="invalid_event")
        return {f["event_id"]: f["sender_sites"] for f in items} if len(items) == 2 else None

    assert await eventually(both) == {unreadable["id"]: [north], anywhere["id"]: None}
