"""Commands end to end: rules → outbox → relay → a connector over NATS → `command.result` → settled.

Real backend process, real Postgres and NATS; the connector is a tiny real NATS responder.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast
from uuid import uuid4

import asyncpg
import httpx
import msgspec
import nats
import pytest
from nats.js import JetStreamContext

from backend.commands.relay import HOLDS_PER_ATTEMPT, DeliveryPolicy
from backend.db import RUNTIME_ROLE
from backend.messaging import APPLY_CONSUMER, EVENTS_STREAM
from switchboard.commands import Command
from tests.support.backends import Stack, own_stack
from tests.support.connector_double import ConnectorDouble, heartbeat
from tests.support.events import cloud_event, phone_booking, publish
from tests.support.waits import Check, eventually


@pytest.fixture
async def stack(server_urls: dict[str, str], workdir: Path) -> AsyncIterator[Stack]:
    """A backend of the test's own on its own NATS and database: the rules send to the seed systems
    (`queue`, `appointments`, `crm`), whose command pace and heartbeats no other test may share."""
    async with own_stack(server_urls["database_url"], workdir) as stack:
        yield stack


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.backend.url, timeout=10) as client:
        yield client


@pytest.fixture
def nc(stack: Stack) -> nats.NATS:
    return stack.nc


@pytest.fixture
def js(stack: Stack) -> JetStreamContext:
    """The test's own JetStream, in place of the session's."""
    return stack.js


@pytest.fixture
def pool(stack: Stack) -> asyncpg.Pool:
    """The owner's view of the test's own database, in place of the session's."""
    return stack.pool


async def commands_of(api: httpx.AsyncClient, headers: dict[str, str], **params: str) -> list[dict]:
    response = await api.get("/api/v1/commands", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["items"]


async def test_each_v1_rule_sends_its_command_once_and_an_ok_answer_settles_it(api, js, nc, token, uid):
    site = f"site-{uid}"
    appt, ticket, customer = f"appointments:A-{uid}", f"queue:T-{uid}", f"crm:C-{uid}"
    headers = {"Authorization": f"Bearer {token('manager', [site])}"}
    t0 = datetime.now(UTC) - timedelta(minutes=10)
    steps = [
        (phone_booking(appt, site) | {"time": t0.isoformat()}, "visit.context"),
        (cloud_event("eligibility.checked", appt, {"site": site, "result": "failed", "reason_code": "DOCS"},
                     time=t0 + timedelta(minutes=1)), "visit.hold"),
        (cloud_event("customer.arrived", ticket, {"site": site, "links": [appt]},
                     time=t0 + timedelta(minutes=2)), "staff.alert"),
        (cloud_event("customer.priority_changed", customer,
                     {"site": site, "priority": "high", "links": [ticket]},
                     time=t0 + timedelta(minutes=3)), "ticket.prioritize"),
        (cloud_event("service.completed", ticket, {"site": site, "outcome": "DONE"},
                     time=t0 + timedelta(minutes=4)), "journey.summary"),
    ]
    async with ConnectorDouble(nc, "queue", site, lambda _: "ok") as queue, \
            ConnectorDouble(nc, "appointments", site, lambda _: "ok") as appointments, \
            ConnectorDouble(nc, "crm", site, lambda _: "ok") as crm:
        for n, (event, command) in enumerate(steps, start=1):
            await publish(js, event)
            items = await eventually(cast(Check, lambda n=n: _at_least(api, headers, n, site=site)))
            assert items[0]["command"] == command
        everything = await eventually(lambda: _all_ok(api, headers, 5, site=site))
        assert {(c["command"], c["system"]) for c in everything} == {
            ("visit.context", "queue"), ("visit.hold", "appointments"), ("staff.alert", "queue"),
            ("ticket.prioritize", "queue"), ("journey.summary", "crm"),
        }
        assert all(c["attempts"] == 1 for c in everything)
        assert len({c["journey_id"] for c in everything}) == 1
        summary = next(c for c in crm.received)
        assert summary.command == "journey.summary" and summary.attempt == 1
        assert sorted(summary.refs) == sorted([appt, ticket, customer])
        assert summary.data["stage"] == "completed" and summary.data["rule"] == "summarize-finished-journey"
        assert [c.command for c in appointments.received] == ["visit.hold"]
        assert sorted(c.command for c in queue.received) == ["staff.alert", "ticket.prioritize",
                                                             "visit.context"]

        # the same booking delivered again (past JetStream's duplicate window) is a duplicate: no second
        # command
        resent = await js.publish("svc.events.appointments.appointment.booked",
                                  msgspec.json.encode(steps[0][0]), headers={"Nats-Msg-Id": f"resent-{uid}"})
        journey = everything[0]["journey_id"]

        async def resent_handled() -> bool:  # the apply worker acknowledges once the batch committed
            info = await js.consumer_info(EVENTS_STREAM, APPLY_CONSUMER)
            return info.ack_floor.stream_seq >= resent.seq

        await eventually(resent_handled)
        assert len(await commands_of(api, headers, site=site)) == 5
        assert len(await commands_of(api, headers, journey=journey, status="ok", system="queue")) == 3
    outsider = {"Authorization": f"Bearer {token('manager', ['elsewhere'])}"}
    assert await commands_of(api, outsider, journey=journey) == []
    assert (await api.get("/api/v1/commands", params={"site": site}, headers=outsider)).status_code == 403
    connector = {"Authorization": f"Bearer {token('connector', '*', 'queue')}"}
    assert (await api.get("/api/v1/commands", headers=connector)).status_code == 403


async def _at_least(api, headers, n, **params):
    items = await commands_of(api, headers, **params)
    return items if len(items) >= n else None


async def _all_ok(api, headers, n, **params):
    items = await commands_of(api, headers, **params)
    return items if len(items) == n and all(c["status"] == "ok" for c in items) else None


async def test_a_command_failing_to_its_last_attempt_is_a_failure_and_a_retry_after_the_fix_resolves_it(
        api, js, nc, token, uid):
    site = f"site-{uid}"
    reader = {"Authorization": f"Bearer {token('manager', [site])}"}
    sre = {"Authorization": f"Bearer {token('sre', [site])}"}
    answer = {"now": "failed"}
    async with ConnectorDouble(nc, "queue", site, lambda _: answer["now"]) as queue:
        await publish(js, phone_booking(f"appointments:A-{uid}", site))
        [command] = await eventually(lambda: _with_status(api, reader, "failed", site=site))
        assert command["attempts"] == 3
        assert command["last_error"] == "answered failed: upstream said no"
        assert [c.attempt for c in queue.received] == [1, 2, 3]
        assert len({c.id for c in queue.received}) == 1

        failures = (await api.get("/api/v1/failures", params={"site": site}, headers=reader)).json()["items"]
        [failure] = failures
        assert (failure["kind"], failure["status"], failure["command_id"]) == (
            "command_failed", "open", command["id"])
        assert failure["payload"]["command"] == "visit.context"

        answer["now"] = "ok"  # the cause is fixed upstream
        first, second = await _double_click(api, f"/api/v1/failures/{failure['id']}/retry", sre)
        assert sorted([first["outcome"], second["outcome"]]) in (
            ["already_retrying", "retrying"], ["already_resolved", "retrying"], ["just_retried", "retrying"])
        await eventually(lambda: _failure_status(api, reader, failure["id"], "resolved"))
        [settled] = await commands_of(api, reader, site=site)
        assert (settled["status"], settled["attempts"]) == ("ok", 4)
        assert [c.attempt for c in queue.received] == [1, 2, 3, 4]  # the double click sent one attempt


async def _double_click(api, path, headers):
    responses = await asyncio.gather(api.post(path, headers=headers, json={}),
                                     api.post(path, headers=headers, json={}))
    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    return [r.json() for r in responses]


async def _with_status(api, headers, status, **params):
    items = await commands_of(api, headers, **params)
    return items if items and all(c["status"] == status for c in items) else None


async def _failure_status(api, headers, failure_id, status):
    failure = (await api.get(f"/api/v1/failures/{failure_id}", headers=headers)).json()
    return failure if failure["status"] == status else None


async def test_an_unanswered_command_times_out_into_a_failure(api, js, nc, token, uid):
    site = f"site-{uid}"
    reader = {"Authorization": f"Bearer {token('manager', [site])}"}
    async with ConnectorDouble(nc, "queue", site, lambda _: None) as queue:
        await publish(js, phone_booking(f"appointments:A-{uid}", site))
        # three attempts, each unanswered for the answer timeout (4 s) and backed off: slow by design
        [command] = await eventually(lambda: _with_status(api, reader, "failed", site=site), timeout=25)
    assert command["attempts"] == 3
    assert command["last_error"] == "no answer within 4s"
    assert [c.attempt for c in queue.received] == [1, 2, 3]
    [failure] = (await api.get("/api/v1/failures", params={"site": site, "kind": "command_timeout"},
                               headers=reader)).json()["items"]
    assert failure["status"] == "open" and failure["command_id"] == command["id"]


async def test_commands_for_a_system_that_is_down_are_held_and_go_out_in_order_when_it_is_back(
        api, js, nc, pool: asyncpg.Pool, token, uid):
    site = f"site-{uid}"
    reader = {"Authorization": f"Bearer {token('manager', [site])}"}
    connector = f"queue-{uid}"
    try:
        async with ConnectorDouble(nc, "queue", site, lambda _: "ok") as queue:
            # silent for longer than three heartbeat intervals: down
            await publish(js, heartbeat("queue", connector, "up", age=timedelta(minutes=5)))
            await eventually(lambda: pool.fetchval("SELECT 1 FROM heartbeats WHERE connector = $1",
                                                   connector))
            await publish(js, phone_booking(f"appointments:A1-{uid}", site))
            await eventually(lambda: _with_status(api, reader, "held", site=site))
            # the connector itself reports its upstream down: still held
            await publish(js, heartbeat("queue", connector, "down"))
            for n in (2, 3):
                await publish(js, phone_booking(f"appointments:A{n}-{uid}", site))
                await eventually(cast(Check, lambda n=n: _count_with_status(api, reader, "held", n,
                                                                            site=site)))
            assert queue.received == []

            await publish(js, heartbeat("queue", connector, "up", age=timedelta(seconds=-1)))
            released = await eventually(lambda: _count_with_status(api, reader, "ok", 3, site=site))
            created_order = [c["id"] for c in reversed(released)]  # the list is newest first
            assert [str(c.id) for c in queue.received] == created_order
            assert [c.attempt for c in queue.received] == [1, 1, 1]
    finally:
        await pool.execute("DELETE FROM heartbeats WHERE connector = $1", connector)


async def _count_with_status(api, headers, status, n, **params):
    items = await commands_of(api, headers, **params)
    return items if len(items) == n and all(c["status"] == status for c in items) else None


async def test_a_system_answering_unavailable_gets_the_command_again_without_using_up_its_attempts(
        api, js, nc, token, uid):
    site = f"site-{uid}"
    reader = {"Authorization": f"Bearer {token('manager', [site])}"}
    answers = iter(["unavailable"] * 3 + ["ok"])  # three times the limit would allow for failures
    async with ConnectorDouble(nc, "queue", site, lambda _: next(answers)) as queue:
        await publish(js, phone_booking(f"appointments:A-{uid}", site))
        [command] = await eventually(lambda: _with_status(api, reader, "ok", site=site))
    assert command["attempts"] == 4
    assert [c.attempt for c in queue.received] == [1, 2, 3, 4]
    assert await failures_of_site(api, reader, site) == []


async def failures_of_site(api, headers, site):
    return (await api.get("/api/v1/failures", params={"site": site}, headers=headers)).json()["items"]


async def test_an_answer_to_no_command_or_from_another_system_is_a_failure_and_settles_nothing(
        api, js, nc, pool: asyncpg.Pool, token, uid):
    site = f"site-{uid}"
    reader = {"Authorization": f"Bearer {token('manager', [site])}"}
    sre = {"Authorization": f"Bearer {token('sre')}"}
    async with ConnectorDouble(nc, "queue", site, lambda _: None) as queue:
        await publish(js, phone_booking(f"appointments:A-{uid}", site))
        await eventually(lambda: _with_status(api, reader, "sent", site=site))
    command_id = str(queue.received[0].id)
    forged = cloud_event("command.result", f"crm:R-{uid}", {"command_id": command_id, "status": "ok"})
    unknown = cloud_event("command.result", f"queue:R1-{uid}", {"command_id": str(uuid4()), "status": "ok"})
    not_an_id = cloud_event("command.result", f"queue:R2-{uid}",
                            {"command_id": f"c-{uid}", "status": "failed"})
    # a connector limited to another site names it: it may not settle this site's command
    elsewhere = cloud_event("command.result", f"queue:R4-{uid}",
                            {"command_id": command_id, "status": "ok", "site": f"other-{uid}"})
    for answer in (forged, unknown, not_an_id, elsewhere):
        await publish(js, answer)

    async def failures_of_answers():
        items = (await api.get("/api/v1/failures", params={"system": "queue", "limit": 500},
                               headers=sre)).json()["items"]
        items += (await api.get("/api/v1/failures", params={"system": "crm", "limit": 500},
                                headers=sre)).json()["items"]
        found = {f["event_id"]: f for f in items if f["event_type"] == "command.result"}
        return found if len(found) == 4 else None

    found = await eventually(failures_of_answers)
    assert (found[forged["id"]]["kind"], found[forged["id"]]["reason"]) == (
        "unauthorized_source", "answers a command sent to queue: only that system may answer it")
    assert (found[elsewhere["id"]]["kind"], found[elsewhere["id"]]["reason"]) == (
        "unauthorized_source", f"answers from site other-{uid} a command of site {site}")
    for answer in (unknown, not_an_id):
        assert found[answer["id"]]["kind"] == "apply_error"
        assert found[answer["id"]]["reason"].startswith("answers no command")
    # refused, not applied: none of them is kept as an event, and the forged `ok` settled nothing
    assert await pool.fetchval("SELECT count(*) FROM events WHERE id = ANY($1::text[])",
                               [forged["id"], unknown["id"], not_an_id["id"], elsewhere["id"]]) == 0
    assert (await commands_of(api, reader, site=site))[0]["status"] != "ok"

    retried = (await api.post(f"/api/v1/failures/{found[unknown['id']]['id']}/retry", headers=sre,
                              json={})).json()
    assert retried["outcome"] == "still_failing"
    failure = (await api.get(f"/api/v1/failures/{found[unknown['id']]['id']}", headers=sre)).json()
    assert failure["kind"] == "apply_error" and failure["reason"].startswith("answers no command")
    forged_retry = await api.post(f"/api/v1/failures/{found[forged['id']]['id']}/retry", headers=sre, json={})
    assert forged_retry.status_code == 409

    # the command's own system answers it: settled
    await publish(js, cloud_event("command.result", f"queue:R3-{uid}",
                                  {"command_id": command_id, "status": "ok"}))
    await eventually(lambda: _with_status(api, reader, "ok", site=site))


async def test_the_relay_outlives_a_database_error_and_sends_once_it_clears(api, js, nc, pool: asyncpg.Pool,
                                                                           token, uid):
    site = f"site-{uid}"
    reader = {"Authorization": f"Bearer {token('manager', [site])}"}
    refusal = f"refuse_{uid}"
    # any error Postgres may raise in a tick (a deadlock with another replica, a failover's read-only moment)
    # a sequence counts the refusals: it is not rolled back with the statement the trigger fails
    await pool.execute(f"""
        CREATE SEQUENCE {refusal}_count;
        GRANT USAGE ON SEQUENCE {refusal}_count TO {RUNTIME_ROLE};
        CREATE FUNCTION {refusal}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.site = '{site}' AND NEW.status = 'sent' THEN
            PERFORM nextval('{refusal}_count'); RAISE EXCEPTION 'not now'; END IF;
        RETURN NEW; END $$;
        CREATE TRIGGER {refusal} BEFORE UPDATE ON commands FOR EACH ROW EXECUTE FUNCTION {refusal}();
    """)
    async with ConnectorDouble(nc, "queue", site, lambda _: "ok") as queue:
        try:
            await publish(js, phone_booking(f"appointments:A1-{uid}", site))
            # published, then the tick fails marking it sent (and the next ticks again, until the answer)
            await eventually(lambda: _with_status(api, reader, "ok", site=site))  # its answer settles it
            assert len(queue.received) == 1
            assert await pool.fetchval(f"SELECT is_called FROM {refusal}_count"), "the relay met the error"
        finally:
            await pool.execute(f"DROP TRIGGER {refusal} ON commands; DROP FUNCTION {refusal}();"
                               f" DROP SEQUENCE {refusal}_count")
        # the relay is still there: the next command goes out
        await publish(js, phone_booking(f"appointments:A2-{uid}", site))
        await eventually(lambda: _count_with_status(api, reader, "ok", 2, site=site))
    assert len({c.id for c in queue.received}) == 2


@contextlib.asynccontextmanager
async def stack_with(server_urls: dict[str, str], workdir: Path,
                     **env: str) -> AsyncIterator[tuple[Stack, httpx.AsyncClient]]:
    """A stack of the test's own with delivery settings of its own (`SWITCHBOARD_COMMAND_…`)."""
    async with own_stack(server_urls["database_url"], workdir, env) as stack, \
            httpx.AsyncClient(base_url=stack.backend.url, timeout=10) as api:
        yield stack, api


async def test_a_journey_s_command_waiting_to_be_sent_again_keeps_its_place_before_the_journey_s_next(
        server_urls, workdir, token, uid):
    site = f"site-{uid}"
    reader = {"Authorization": f"Bearer {token('manager', [site])}"}
    appt, ticket = f"appointments:A-{uid}", f"queue:T-{uid}"
    def answer(command: Command) -> str:  # visit.context's first attempt is held, then waits out its backoff
        return "unavailable" if command.command == "visit.context" and command.attempt == 1 else "ok"

    t0 = datetime.now(UTC) - timedelta(minutes=5)
    # held for 2-4 s: long enough for the journey's next command to be made, and due, meanwhile; answers
    # awaited for 30 s, so that a loaded machine's slow answer is never taken for none
    async with stack_with(server_urls, workdir, SWITCHBOARD_COMMAND_BACKOFF_S="4",
                          SWITCHBOARD_COMMAND_BACKOFF_MAX_S="4",
                          SWITCHBOARD_COMMAND_ANSWER_TIMEOUT_S="30") as (stack, api), \
            ConnectorDouble(stack.nc, "queue", site, answer) as queue, \
            ConnectorDouble(stack.nc, "appointments", site, lambda _: "ok"):
        await publish(stack.js, phone_booking(appt, site) | {"time": t0.isoformat()})
        await eventually(lambda: _with_status(api, reader, "held", site=site))
        await publish(stack.js, cloud_event("eligibility.checked", appt, {"site": site, "result": "failed",
                                                                          "reason_code": "DOCS"},
                                            time=t0 + timedelta(minutes=1)))
        # applied before the arrival: in one batch with it, the journey is no longer booked after the batch
        # and visit.hold is rightly not made (met once in a loaded run)
        await eventually(lambda: _command_named(api, reader, "visit.hold", site=site))
        await publish(stack.js, cloud_event("customer.arrived", ticket, {"site": site, "links": [appt]},
                                            time=t0 + timedelta(minutes=2)))
        # the journey's next command for the queue is made, due at once, and waits behind the held one
        alert = await eventually(lambda: _command_named(api, reader, "staff.alert", site=site))
        assert alert["status"] == "pending" and [c.command for c in queue.received] == ["visit.context"]
        try:
            await eventually(lambda: _count_with_status(api, reader, "ok", 3, site=site))
        except AssertionError as exc:  # say how each stands
            states = [(c["command"], c["status"], c["attempts"])
                      for c in await commands_of(api, reader, site=site)]
            raise AssertionError(f"{exc}; commands: {states}; received: {queue.received}") from None
    assert [(c.command, c.attempt) for c in queue.received] == [
        ("visit.context", 1), ("visit.context", 2), ("staff.alert", 1)]


async def _command_named(api, headers, name, **params):
    return next((c for c in await commands_of(api, headers, **params) if c["command"] == name), None)


async def test_a_late_answer_to_an_earlier_attempt_says_nothing_of_the_attempt_in_flight(
        server_urls, workdir, token, uid):
    site = f"site-{uid}"
    reader = {"Authorization": f"Bearer {token('manager', [site])}"}
    # attempt 1 answered unavailable: attempt 2 goes out at once, and has half a minute for its answer
    async with stack_with(server_urls, workdir, SWITCHBOARD_COMMAND_ANSWER_TIMEOUT_S="30") as (stack, api):
        async with ConnectorDouble(stack.nc, "queue", site,
                                   lambda c: "unavailable" if c.attempt == 1 else None) as queue:
            await publish(stack.js, phone_booking(f"appointments:A-{uid}", site))
            await eventually(lambda: _true(len(queue.received) == 2))
        command = queue.received[0]

        def answer(attempt: int, status: str) -> dict:
            data = {"command_id": str(command.id), "status": status}
            return cloud_event("command.result", f"queue:R-{uid}", data, id=f"result-{command.id}-{attempt}")

        await publish(stack.js, answer(1, "failed"))  # the first attempt's answer again, late and otherwise
        await eventually(lambda: stack.pool.fetchval("SELECT 1 FROM events WHERE id = $1",
                                                     f"result-{command.id}-1"))
        # applied in the transaction that stored it: the second attempt, in flight, is not taken for failed
        in_flight = await stack.pool.fetchrow(
            "SELECT status, attempts, answer FROM commands WHERE id = $1::uuid", str(command.id))
        assert tuple(in_flight) == ("sent", 2, None)
        await publish(stack.js, answer(2, "ok"))
        [settled] = await eventually(lambda: _with_status(api, reader, "ok", site=site))
    assert settled["attempts"] == 2


async def _true(value: bool) -> bool:
    return value


async def test_a_command_answered_unavailable_for_ever_becomes_a_failure_after_four_times_its_attempts(
        api, js, nc, token, uid):
    site = f"site-{uid}"
    reader = {"Authorization": f"Bearer {token('manager', [site])}"}
    async with ConnectorDouble(nc, "queue", site, lambda _: "unavailable") as queue:
        await publish(js, phone_booking(f"appointments:A-{uid}", site))
        [command] = await eventually(lambda: _with_status(api, reader, "failed", site=site), timeout=30)
    limit = 3 * HOLDS_PER_ATTEMPT  # this stack's SWITCHBOARD_COMMAND_MAX_ATTEMPTS is 3
    assert command["attempts"] == limit and [c.attempt for c in queue.received] == list(range(1, limit + 1))
    [failure] = await failures_of_site(api, reader, site)
    assert failure["kind"] == "command_failed"
    assert failure["reason"].startswith(f"answered unavailable {limit} times")


def test_the_backoff_stays_within_its_ceiling_however_many_attempts():
    policy = DeliveryPolicy(answer_timeout_s=5, backoff_s=0.5, backoff_max_s=300, max_attempts=5)
    assert all(150 <= policy.backoff(attempt).total_seconds() <= 300 for attempt in (20, 1025, 10**6))


async def test_a_merge_takes_the_absorbed_journey_s_commands_to_the_survivor(api, js, token, uid):
    """Found in review: they kept the absorbed id, so a held one no longer held the survivor's later
    commands back (a journey's commands to one system go out in order)."""
    site = f"site-{uid}"
    reader = {"Authorization": f"Bearer {token('manager', [site])}"}
    appt, ticket = f"appointments:A-{uid}", f"queue:T-{uid}"
    await publish(js, cloud_event("customer.arrived", ticket, {"site": site}))
    await publish(js, phone_booking(appt, site))
    [made] = await eventually(lambda: commands_of(api, reader, site=site))
    await publish(js, cloud_event("customer.arrived", ticket, {"site": site, "links": [appt]}))

    async def merged() -> dict | None:
        page = (await api.get("/api/v1/journeys", params={"ref": ticket}, headers=reader)).json()["items"]
        return page[0] if page and appt in page[0]["refs"] else None

    survivor = await eventually(merged)
    [command] = await commands_of(api, reader, site=site)
    assert command["id"] == made["id"] and command["journey_id"] == survivor["id"]
