"""Bad messages on NATS are recorded as failures with their reason, and never block valid traffic."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import cast

import msgspec
import pytest
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from backend.ingest.apply import MAX_JOURNEY_REFS
from backend.ingest.consumer import ApplyWorker
from backend.live.bus import LiveBus
from backend.routing.rules import DEFAULT_RULES, load_rules
from switchboard.events import MAX_SITE_AUTHORITIES, SEED_SYSTEMS
from switchboard.waits import stop_tasks
from tests.support.backends import nats_connect
from tests.support.database import refusing_site
from tests.support.events import cloud_event, publish
from tests.support.waits import Check, eventually


@pytest.fixture
def headers(token):
    return {"Authorization": f"Bearer {token('sre')}"}


async def failures_for(api, headers, **params):
    return (await api.get("/api/v1/failures", params=params, headers=headers)).json()["items"]


async def test_each_bad_message_is_a_failure_and_valid_events_keep_flowing(api, js, headers, uid):
    site = f"bad-{uid}"
    ok_before = cloud_event("customer.arrived", f"queue:OK1-{uid}", {"site": site})
    ok_after = cloud_event("customer.arrived", f"queue:OK2-{uid}", {"site": site})
    pii = cloud_event("customer.arrived", f"queue:P-{uid}", {"site": site, "full_name": "Ada Lovelace"})
    wrong_type = cloud_event("ticket.called", f"queue:W-{uid}", {"site": site, "counter": 7})
    mismatch = cloud_event("customer.arrived", f"queue:M-{uid}", {"site": site})
    crashing_site = cloud_event("customer.arrived", f"queue:X-{uid}", {"site": site})

    await publish(js, ok_before)
    broken_json = b'{"specversion": "1.0", "id": "' + uid.encode() + b'", broken'
    await publish(js, broken_json, "svc.events.queue.customer.arrived")
    await publish(js, pii)
    await publish(js, wrong_type)
    await publish(js, mismatch, subject="svc.events.crm.customer.arrived")
    await publish(js, msgspec.json.encode({**crashing_site, "data": {"site": site, "pad": "x" * 70_000}}),
                  "svc.events.queue.customer.arrived")
    await publish(js, ok_after)

    async def both_valid_applied():
        page = (await api.get("/api/v1/journeys", params={"site": site}, headers=headers)).json()
        return {r for j in page["items"] for r in j["refs"]} >= {f"queue:OK1-{uid}", f"queue:OK2-{uid}"}

    await eventually(both_valid_applied)

    by_event = {f["event_id"]: f for f in await failures_for(api, headers, site=site)}
    assert by_event[pii["id"]]["kind"] == "pii_rejected"
    assert "Ada" not in msgspec.json.encode(by_event[pii["id"]]["payload"]).decode()
    assert by_event[wrong_type["id"]]["kind"] == "invalid_event"
    assert "counter" in by_event[wrong_type["id"]]["reason"]
    assert by_event[mismatch["id"]]["kind"] == "source_mismatch"
    assert all(f["status"] == "open" and f["attempts"] == 1 for f in by_event.values())

    # the two that could not be read at all carry no site: an unscoped reader finds them by kind
    invalid = await failures_for(api, headers, kind="invalid_event", limit=500)
    reasons = [f["reason"] for f in invalid if uid in f["payload"].get("excerpt", "")]
    assert any(r.startswith("malformed JSON") for r in reasons)
    assert any("exceeds" in r for r in reasons)


async def test_a_redelivered_event_is_a_duplicate_not_a_second_application(api, js, headers, pool, uid):
    event = cloud_event("customer.arrived", f"queue:D-{uid}", {"site": f"dup-{uid}"})
    await publish(js, event)
    # the same event again after JetStream's duplicate window would have forgotten it: a new Nats-Msg-Id
    await js.publish("svc.events.queue.customer.arrived", msgspec.json.encode(event),
                     headers={"Nats-Msg-Id": f"resend-{uid}"})
    marker = cloud_event("customer.arrived", f"queue:D2-{uid}", {"site": f"dup-{uid}"})
    await publish(js, marker)

    async def marker_applied():
        return await pool.fetchval("SELECT count(*) FROM events WHERE id = $1", marker["id"])

    await eventually(marker_applied)
    assert await pool.fetchval("SELECT count(*) FROM events WHERE source = '/queue' AND id = $1",
                               event["id"]) == 1
    journey = (await api.get("/api/v1/journeys", params={"ref": f"queue:D-{uid}"}, headers=headers)).json()
    assert len(journey["items"]) == 1


async def test_an_event_the_database_refuses_becomes_an_apply_error_and_the_rest_of_its_batch_applies(
        api, js, headers, pool, uid):
    poison_site = f"poison-{uid}"
    async with refusing_site(pool, poison_site):
        poison = cloud_event("customer.arrived", f"queue:P-{uid}", {"site": poison_site})
        fine = [cloud_event("customer.arrived", f"queue:F{n}-{uid}", {"site": f"fine-{uid}"})
                for n in range(3)]
        for event in [fine[0], poison, *fine[1:]]:
            await publish(js, event)

        async def poison_recorded():
            return await failures_for(api, headers, site=poison_site)

        [failure] = await eventually(poison_recorded)
        assert failure["kind"] == "apply_error"
        assert "site is closed for maintenance" in failure["reason"]
        assert failure["event_id"] == poison["id"]

        async def fine_applied():
            return await pool.fetchval("SELECT count(*) FROM events WHERE id = ANY($1::text[])",
                                       [e["id"] for e in fine]) == len(fine)

        await eventually(fine_applied)


async def test_an_event_that_would_take_a_journey_past_its_references_bound_is_an_apply_error(
        api, js, headers, pool, uid):
    site, ticket = f"refs-{uid}", f"queue:R-{uid}"
    per_event = 16  # the most links one event may carry
    fitting = (MAX_JOURNEY_REFS - 1) // per_event  # the ticket, then `per_event` more each
    linking = [cloud_event("customer.arrived", ticket,
                           {"site": site, "links": [f"queue:L{n}x{i}-{uid}" for i in range(per_event)]})
               for n in range(fitting + 1)]
    called = cloud_event("ticket.called", ticket, {"site": site, "counter": "4"})
    for event in [*linking, called]:
        await publish(js, event)

    [failure] = await eventually(lambda: failures_for(api, headers, site=site))
    assert (failure["kind"], failure["event_id"]) == ("apply_error", linking[-1]["id"])
    assert f"would hold {1 + (fitting + 1) * per_event} references, more than {MAX_JOURNEY_REFS}" \
        in failure["reason"]

    async def called_applied():
        return await pool.fetchval("SELECT count(*) FROM events WHERE id = $1", called["id"]) == 1

    await eventually(called_applied)  # the journey goes on with the references it holds
    [journey] = (await api.get("/api/v1/journeys", params={"ref": ticket}, headers=headers)).json()["items"]
    assert (len(journey["refs"]), journey["stage"]) == (1 + fitting * per_event, "called")

    retried = await api.post(f"/api/v1/failures/{failure['id']}/retry", headers=headers, json={})
    assert (retried.status_code, retried.json()["outcome"]) == (200, "still_failing")
    after = (await api.get(f"/api/v1/failures/{failure['id']}", headers=headers)).json()
    assert (after["attempts"], after["reason"]) == (2, failure["reason"])


async def test_a_stream_made_again_numbers_from_one_and_its_failures_are_new_ones(settings, pool, uid):
    """A failure is keyed by its message's stream sequence (a redelivery is the same failure) and by when
    the stream was made: message 1 of a stream deleted and made again is not the old message 1, whose open
    failure would otherwise swallow it, acknowledged and recorded nowhere."""
    nc = await nats_connect(settings)
    js, stream = nc.jetstream(), f"KEYS_{uid}"
    rules = load_rules(DEFAULT_RULES, SEED_SYSTEMS)
    try:
        for made in (1, 2):
            await js.add_stream(StreamConfig(name=stream, subjects=[f"k{uid}.events.>"]))
            await js.add_consumer(stream, ConsumerConfig(durable_name="apply", ack_policy=AckPolicy.EXPLICIT))
            await js.publish(f"k{uid}.events.queue.customer.arrived", f'{{"made {made} {uid}": '.encode())
            worker = ApplyWorker(nc, pool, bus=LiveBus(None), rules=rules, batch=10, max_bytes=65536,
                                 known_systems=SEED_SYSTEMS, stream=stream, durable="apply")
            running = asyncio.create_task(worker.run())
            try:
                await eventually(cast(Check, lambda made=made: pool.fetchval(
                    "SELECT count(*) FROM failures WHERE payload->>'excerpt' LIKE $1",
                    f"%made {made} {uid}%")))
            finally:
                await stop_tasks([running])
            await js.delete_stream(stream)
    finally:
        await nc.close()
    keys = await pool.fetch("SELECT dedupe_key FROM failures WHERE payload->>'excerpt' LIKE $1", f"%{uid}%")
    assert len({r["dedupe_key"] for r in keys}) == 2
    assert all(r["dedupe_key"].startswith(f"nats:{stream}:") and r["dedupe_key"].endswith(":1") for r in keys)


async def test_an_event_that_would_take_a_journey_past_its_site_claims_bound_is_an_apply_error(
        api, js, headers, pool, uid):
    """Each site subject a connector publishes a journey's event on keeps a claim in its state (`queue@X`):
    past the bound the next is refused, as for references."""
    ticket = f"queue:S-{uid}"
    sites = [f"s{n}-{uid}" for n in range(MAX_SITE_AUTHORITIES + 1)]
    events = [cloud_event("ticket.called", ticket, {"site": site, "counter": "4"},
                          time=datetime.now(UTC) + timedelta(seconds=n)) for n, site in enumerate(sites)]
    for event, site in zip(events, sites, strict=True):
        await publish(js, event, subject=f"svc.events.queue.ticket.called.{site}")

    [failure] = await eventually(lambda: failures_for(api, headers, site=sites[-1]))
    assert (failure["kind"], failure["event_id"]) == ("apply_error", events[-1]["id"])
    assert f"would be placed by {MAX_SITE_AUTHORITIES + 1} systems and sites, more than" in failure["reason"]
    assert await pool.fetchval("SELECT count(*) FROM events WHERE id = ANY($1::text[])",
                               [e["id"] for e in events[:-1]]) == MAX_SITE_AUTHORITIES


async def test_a_database_refusing_writes_for_a_while_holds_the_events_back_and_records_no_failure(
        api, js, headers, pool, uid):
    """Found in review: read-only (a replica being promoted) was taken for the event's fault, one event at a
    time, and each was recorded an `apply_error` and acknowledged."""
    site, attempts = f"ro-{uid}", f"ro_attempts_{uid}"
    await pool.execute(f"""
        CREATE SEQUENCE {attempts};
        GRANT USAGE ON SEQUENCE {attempts} TO PUBLIC;
        CREATE FUNCTION {attempts}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.site = '{site}' THEN
            PERFORM nextval('{attempts}');  -- a sequence counts even in a transaction rolled back
            RAISE EXCEPTION 'in recovery' USING ERRCODE = 'read_only_sql_transaction';
        END IF; RETURN NEW; END $$;
        CREATE TRIGGER {attempts} BEFORE INSERT ON journeys FOR EACH ROW EXECUTE FUNCTION {attempts}();
    """)
    event = cloud_event("customer.arrived", f"queue:RO-{uid}", {"site": site})
    try:
        await publish(js, event)

        async def tried_again() -> bool:
            return await pool.fetchval(f"SELECT last_value >= 3 FROM {attempts}")

        await eventually(tried_again, timeout=30)
        assert await failures_for(api, headers, site=site) == []
    finally:
        await pool.execute(f"DROP TRIGGER {attempts} ON journeys; DROP FUNCTION {attempts}();"
                           f" DROP SEQUENCE {attempts}")

    async def applied() -> bool:
        return await pool.fetchval("SELECT count(*) FROM events WHERE id = $1", event["id"]) == 1

    await eventually(applied, timeout=30)
    assert await failures_for(api, headers, site=site) == []
