"""The live websocket against real backends, a real Postgres and a real NATS: no mocks.

Updates enter the way they do in production: canonical events on JetStream (applied by whichever
replica fetches them), or, where a test needs volume, live updates on the `svc.live.>` bus exactly
as a replica publishes them.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from backend.live.bus import ALL_SITES, SUBJECT_PREFIX, LiveBus, encode_update
from backend.live.feed import SITE_INTERVAL_S
from backend.live.handshake import QueryTokenMiddleware
from backend.live.hub import LiveHub, text_frame
from backend.live.outbox import Outbox, Overflow
from backend.live.schemas import TOPICS
from backend.settings import BackendSettings
from tests.support.backends import nats_connect, own_stack
from tests.support.events import cloud_event, publish
from tests.support.live import connect, is_update, receive, receive_until, subscribe, ws_url
from tests.support.waits import eventually
from tools.backend_process import BackendProcess


@pytest.fixture
async def bus(settings: BackendSettings) -> AsyncIterator[Callable[..., Any]]:
    """Publish live updates onto the bus as a replica does."""
    nc = await nats_connect(settings)

    async def send(topic: str, site: str | None, key: str, data: Any) -> None:
        await nc.publish(SUBJECT_PREFIX + topic, encode_update(site, key, data))

    yield send
    await nc.flush()
    await nc.close()


async def metric(backend: BackendProcess, name: str, **labels: str) -> float:
    async with httpx.AsyncClient(base_url=backend.url, timeout=10) as client:
        text = (await client.get("/metrics")).text
    label_text = ",".join(f'{k}="{v}"' for k, v in labels.items())
    found = re.search(
        rf"^{name}{{{re.escape(label_text)}}} (\S+)$" if labels else rf"^{name} (\S+)$", text, re.MULTILINE
    )
    return float(found.group(1)) if found else 0.0


async def test_an_event_applied_by_either_replica_reaches_clients_on_both(
    backend, second_backend, js, token, uid
):
    site, ref = f"live-{uid}", f"queue:T-{uid}"
    manager = token("manager", [site])
    async with connect(backend, manager) as first, connect(second_backend, manager) as second:
        for ws in (first, second):
            snapshots = await subscribe(ws, ["journeys", "flow", "capacity", "reconciliation"])
            assert {t: s["data"] for t, s in snapshots.items()} == {
                "journeys": [],
                "flow": [],
                "capacity": [],
                "reconciliation": [],
            }
            assert all(isinstance(s["seq"], int) and s["epoch"] for s in snapshots.values())
        await publish(js, cloud_event("customer.arrived", ref, {"site": site}))
        for ws in (first, second):
            # the journey and its site's flow are published independently: either may come first
            journey, before = await receive_until(ws, is_update("journeys",
                                                                lambda f: ref in f["data"]["refs"]))
            assert (journey["site"], journey["key"], journey["data"]["stage"]) == (
                site,
                journey["data"]["id"],
                "arrived",
            )
            flows = [f for f in before if is_update("flow")(f)]
            flow = flows[-1] if flows else (await receive_until(ws, is_update("flow")))[0]
            assert (flow["key"], flow["data"]["stages"]) == (site, {"arrived": 1})
        await publish(
            js,
            cloud_event(
                "capacity.changed",
                f"site:{site}",
                {"site": site, "counters_open": 4, "counters_busy": 3, "staff_on_duty": 5, "queue_length": 7},
                source="/queue",
            ),
        )
        for ws in (first, second):
            capacity, _ = await receive_until(ws, is_update("capacity"))
            assert (capacity["data"]["queue_length"], capacity["data"]["utilisation"]) == (7, 0.75)


async def test_a_live_journey_is_the_journey_the_api_shows_even_after_a_link_joins_two(
    backend, js, token, uid
):
    """The live feed publishes what a batch wrote without reading it back: every reference stored before, and
    those a link moved over, are in it, as in the API's answer."""
    site, appointment, ticket = f"joined-{uid}", f"appointments:A-{uid}", f"queue:T-{uid}"
    manager = token("manager", [site])
    async with connect(backend, manager) as ws:
        await subscribe(ws, ["journeys"])
        await publish(js, cloud_event("appointment.booked", appointment,
                                      {"site": site, "service": "passport", "channel": "web",
                                       "slot_start": "2026-12-05T09:00:00+00:00"}))
        booked, _ = await receive_until(ws, is_update("journeys",
                                                      lambda f: f["data"]["refs"] == [appointment]))
        await publish(js, cloud_event("customer.arrived", ticket, {"site": site}))
        arrived, _ = await receive_until(ws, is_update("journeys", lambda f: f["data"]["refs"] == [ticket]))
        await publish(js, cloud_event("ticket.issued", ticket,
                                      {"site": site, "ticket": "T-9", "queue_name": "main",
                                       "links": [appointment]}))
        seen: dict[str, dict[str, Any]] = {}

        def merged_and_gone(frame: dict[str, Any]) -> bool:
            if is_update("journeys")(frame):
                seen["gone" if "merged_into" in frame["data"] else "joined"] = frame["data"]
            return seen.keys() == {"gone", "joined"}

        await receive_until(ws, merged_and_gone)
        # the journey a link joined to the older one leaves the board: clients hear it is gone, and where
        assert seen["gone"] == {"id": arrived["data"]["id"], "site": site,
                                "merged_into": booked["data"]["id"]}
        assert seen["joined"]["id"] == booked["data"]["id"] and len(seen["joined"]["refs"]) == 2
        # an event naming only the ticket: the appointment's reference comes from what was stored
        await publish(js, cloud_event("ticket.called", ticket, {"site": site, "counter": "C2"}))
        joined, _ = await receive_until(ws, is_update("journeys",
                                                      lambda f: f["data"].get("stage") == "called"))
    async with httpx.AsyncClient(base_url=backend.url, timeout=10) as client:
        shown = (await client.get(f"/api/v1/journeys/{joined['data']['id']}",
                                  headers={"Authorization": f"Bearer {manager}"})).json()
    assert joined["data"]["refs"] == sorted([appointment, ticket])
    assert (joined["data"]["counter"], joined["data"]["ticket"], joined["data"]["service"]) == (
        "C2", "T-9", "passport")
    assert joined["data"] == {name: shown[name] for name in joined["data"]}


async def test_after_a_burst_the_last_live_update_of_every_journey_is_the_journey_as_stored(
    backend, js, token, uid
):
    """Journeys changed by many batches in a row, published as fast as they are applied: the one published
    last is the one stored."""
    site = f"burst-{uid}"
    stages = ["customer.arrived", "ticket.called", "service.started", "service.completed"]
    tickets = [f"queue:T-{uid}-{n}" for n in range(12)]
    manager = token("manager", [site])
    async with connect(backend, manager) as ws:
        await subscribe(ws, ["journeys"])
        start, data = datetime.now(UTC), {"site": site, "counter": "C1", "outcome": "DONE"}
        for step, type_ in enumerate(stages):
            for ticket in tickets:
                await publish(js, cloud_event(type_, ticket, data, time=start + timedelta(seconds=step)))
        last: dict[str, dict[str, Any]] = {}

        def all_completed(frame: dict[str, Any]) -> bool:
            if is_update("journeys")(frame):
                last[frame["data"]["refs"][0]] = frame["data"]
            return len(last) == len(tickets) and all(j["stage"] == "completed" for j in last.values())

        await receive_until(ws, all_completed)
    async with httpx.AsyncClient(base_url=backend.url, timeout=10) as client:
        stored = (await client.get("/api/v1/journeys", params={"site": site, "limit": 50},
                                   headers={"Authorization": f"Bearer {manager}"})).json()["items"]
    assert {j["refs"][0]: j for j in stored} == last


async def test_flow_is_recomputed_per_site_at_most_once_a_second_not_per_event(backend, js, token, uid):
    site = f"busy-{uid}"
    async with connect(backend, token("manager", [site])) as ws:
        await subscribe(ws, ["flow"])
        started = asyncio.get_running_loop().time()
        for n in range(40):
            await publish(js, cloud_event("customer.arrived", f"queue:T-{uid}-{n}", {"site": site}))
        last, before = await receive_until(
            ws, is_update("flow", lambda f: f["data"]["stages"] == {"arrived": 40})
        )
        elapsed = asyncio.get_running_loop().time() - started
    flow_updates = [f for f in before if f["op"] == "update"] + [last]
    replicas = 2  # this module's second backend applies some of the events too, and throttles on its own
    assert len(flow_updates) <= replicas * (elapsed / SITE_INTERVAL_S + 1) < 40


async def test_a_client_receives_only_its_own_sites(backend, js, token, uid):
    mine, theirs = f"mine-{uid}", f"theirs-{uid}"
    async with (
        connect(backend, token("floor_staff", [mine])) as scoped,
        connect(backend, token("sre")) as everyone,
    ):
        await subscribe(scoped, ["journeys"])
        await subscribe(everyone, ["journeys"], sites=[mine, theirs])
        await publish(js, cloud_event("customer.arrived", f"queue:T-{uid}-x", {"site": theirs}))
        await publish(js, cloud_event("customer.arrived", f"queue:T-{uid}-m", {"site": mine}))
        seen = {(await receive_until(everyone, is_update("journeys")))[0]["site"] for _ in range(2)}
        assert seen == {mine, theirs}
        # the hub fanned both out before `everyone` got them; a pong comes after anything queued before it
        await scoped.send('{"op": "ping"}')
        _, frames = await receive_until(scoped, lambda f: f["op"] == "pong")
        assert [(f["topic"], f["site"]) for f in frames] == [("journeys", mine)]

        await scoped.send(
            msgspec.json.encode({"op": "subscribe", "topics": ["flow"], "sites": [theirs]}).decode()
        )
        refused = await receive(scoped)
        assert refused["op"] == "error" and theirs in refused["reason"]


async def test_updates_of_no_site_reach_all_site_tokens_and_updates_for_all_sites_reach_everyone(
    backend, bus, token, uid
):
    async with (
        connect(backend, token("manager", [f"one-{uid}"])) as scoped,
        connect(backend, token("sre")) as everyone,
    ):
        for ws in (scoped, everyone):
            await subscribe(ws, ["integrations"])
        await bus("integrations", None, f"unknown-{uid}", {"site": "unknown"})
        await bus("integrations", ALL_SITES, f"queue-{uid}", {"status": "up"})
        # one publisher's messages arrive in order: once `everyone` has the second, both were fanned out
        last, before = await receive_until(
            everyone, is_update("integrations", lambda f: f["key"] == f"queue-{uid}")
        )
        # the backend's own integration monitor publishes on this topic too: only this test's keys count
        assert [f["key"] for f in before if f["op"] == "update" and uid in f["key"]] == [f"unknown-{uid}"]
        await scoped.send('{"op": "ping"}')
        _, frames = await receive_until(scoped, lambda f: f["op"] == "pong")
        assert [(f["key"], f["site"], f["data"]) for f in frames if uid in f["key"]] == [
            (last["key"], ALL_SITES, {"status": "up"})
        ]


async def test_a_recorded_failure_is_published_to_the_failures_topic(backend, js, token, uid):
    site = f"fail-{uid}"
    async with connect(backend, token("sre", [site])) as ws:
        await subscribe(ws, ["failures"])
        bad = cloud_event(
            "customer.arrived", f"queue:T-{uid}", {"site": site, "email": "someone@example.org"}
        )
        await publish(js, bad)
        update, _ = await receive_until(ws, is_update("failures"))
    assert (update["site"], update["data"]["kind"], update["data"]["event_id"]) == (
        site,
        "pii_rejected",
        bad["id"],
    )
    assert update["key"] == str(update["data"]["id"])
    assert "someone@example.org" not in msgspec.json.encode(update).decode()


async def test_a_slow_client_is_coalesced_then_dropped_without_delaying_others(backend, bus, token, uid):
    site = f"slow-{uid}"
    manager = token("manager", [site])
    payload = {"blob": "x" * 8000}
    dropped_before = await metric(backend, "switchboard_live_dropped_total", topic="journeys")
    slow_before = await metric(backend, "switchboard_live_disconnects_total", reason="slow")
    async with connect(backend, manager) as fast, connect(backend, manager, max_queue=1) as slow:
        await subscribe(fast, ["journeys"])
        await subscribe(slow, ["journeys"])
        # from here on `slow` reads nothing: its socket buffers fill, then its outbox
        sent = 0
        received: list[int] = []

        async def burst(keys: list[str]) -> None:
            nonlocal sent
            for key in keys:
                await bus("journeys", site, key, payload)
            sent += len(keys)
            while len(received) < sent:  # the fast client keeps up, whatever the slow one does
                received.append((await receive_until(fast, is_update("journeys"), timeout=10))[0]["seq"])

        async def dropped() -> float:
            return await metric(backend, "switchboard_live_dropped_total", topic="journeys")

        async def slow_ones() -> float:
            return await metric(backend, "switchboard_live_disconnects_total", reason="slow")

        # How much fills the slow client's socket buffers depends on the kernel: keep filling until the
        # same keys, sent again and again, are seen coalesced while they wait in its outbox.
        for round_ in range(40):
            await burst([f"a{round_}-{n}" for n in range(250)])
            for _ in range(5):
                await burst([f"k{n}" for n in range(10)])
            if await dropped() > dropped_before:
                break
        assert await dropped() > dropped_before, "updates to the same keys were never coalesced"
        # then more distinct keys than an outbox holds: the slow client is told to leave
        for round_ in range(40):
            await burst([f"b{round_}-{n}" for n in range(250)])
            if await slow_ones() > slow_before:
                break
        assert received == list(range(received[0], received[0] + sent))

        async def slow_one_dropped() -> bool:
            return await slow_ones() == slow_before + 1

        await eventually(slow_one_dropped)
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(30):
                while True:
                    await slow.recv()


async def test_resume_with_last_seq_gets_what_was_missed_or_a_fresh_snapshot(backend, bus, token, uid):
    site = f"resume-{uid}"
    manager = token("manager", [site])
    async with connect(backend, manager) as ws:
        snapshot = (await subscribe(ws, ["journeys"]))["journeys"]
        for key in ("j1", "j2"):
            await bus("journeys", site, key, {"v": 1})
        last = [(await receive_until(ws, is_update("journeys")))[0] for _ in range(2)][-1]
    for key, version in (("j3", 1), ("j2", 2), ("j3", 2)):
        await bus("journeys", site, key, {"v": version})
    await bus("journeys", f"other-{uid}", "j9", {"v": 1})  # another site: never replayed to this token

    async with connect(backend, manager) as ws:
        await ws.send(
            msgspec.json.encode(
                {
                    "op": "subscribe",
                    "topics": ["journeys"],
                    "last_seq": {"journeys": last["seq"]},
                    "epoch": snapshot["epoch"],
                }
            ).decode()
        )
        missed = [await receive(ws), await receive(ws)]
        await ws.send('{"op": "ping"}')
        assert (await receive(ws))["op"] == "pong"
    assert [(f["op"], f["key"], f["data"]) for f in missed] == [
        ("update", "j2", {"v": 2}),
        ("update", "j3", {"v": 2}),
    ]
    assert all(f["seq"] > last["seq"] for f in missed)

    async with connect(backend, manager) as ws:
        fresh = await subscribe(ws, ["journeys"], last_seq={"journeys": last["seq"]}, epoch="another-replica")
    assert fresh["journeys"]["seq"] >= missed[-1]["seq"] and fresh["journeys"]["epoch"] == snapshot["epoch"]


async def test_unsubscribed_topics_stop_arriving(backend, bus, token, uid):
    site = f"unsub-{uid}"
    async with connect(backend, token("manager", [site])) as ws:
        await subscribe(ws, ["journeys", "capacity"])
        await ws.send('{"op": "unsubscribe", "topics": ["journeys"]}')
        await ws.send('{"op": "ping"}')
        assert (await receive(ws))["op"] == "pong"
        await bus("journeys", site, "j1", {"v": 1})
        await bus("capacity", site, site, {"queue_length": 3})
        update, before = await receive_until(ws, is_update("capacity"))
    assert before == [] and update["data"] == {"queue_length": 3}


async def test_malformed_messages_answer_an_error_and_change_nothing(backend, token):
    async with connect(backend, token("manager")) as ws:
        for bad in ("not json", '{"op": "subscribe", "topics": ["weather"]}', '{"op": "dance"}', "[1, 2]"):
            await ws.send(bad)
            answer = await receive(ws)
            assert answer["op"] == "error" and answer["reason"]
        await ws.send(b"\x00binary")
        assert await receive(ws) == {"op": "error",
                                     "reason": "a binary frame: send each message as a JSON text frame"}
        assert set(await subscribe(ws, ["integrations"])) == {"integrations"}


@pytest.mark.parametrize("size", [5_000, 1_000_000])
async def test_an_oversized_message_closes_the_socket(backend, token, size):
    async with connect(backend, token("manager")) as ws:
        await ws.send("x" * size)
        with pytest.raises(ConnectionClosed) as closed:
            await receive(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_a_flood_of_client_messages_is_rate_limited(backend, token):
    async with connect(backend, token("manager")) as ws:
        for _ in range(100):
            await ws.send('{"op": "ping"}')
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(10):
                while True:
                    await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429


async def test_a_client_that_keeps_asking_for_snapshots_is_rate_limited_by_what_they_cost(backend, token):
    """A snapshot is a database read: asking for every topic again and again, without reading what comes
    back, once piled snapshots up in the server's memory at a rate a ping flood could not reach."""
    every = msgspec.json.encode({"op": "subscribe", "topics": list(TOPICS)}).decode()
    async with connect(backend, token("manager")) as ws:
        for _ in range(3):  # 3 messages, 3 × len(TOPICS) snapshots: past the burst of 20
            await ws.send(every)
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(10):
                while True:
                    await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4429


def test_snapshots_a_client_has_not_read_are_bounded_in_bytes_not_only_in_frames():
    outbox = Outbox(limit=2000, control_bytes=1_000_000)
    snapshot = text_frame(b"x" * 300_000)
    for _ in range(3):
        outbox.put_control(snapshot)
    with pytest.raises(Overflow):
        outbox.put_control(snapshot)
    assert len(outbox.frames) == 3


async def test_the_socket_closes_when_its_token_expires(backend, token):
    async with connect(backend, token("manager", ttl=timedelta(seconds=3))) as ws:
        await subscribe(ws, ["flow"])
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(15):
                while True:
                    await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


@pytest.mark.parametrize("case", ["expired", "no token", "connector role", "foreign origin"])
async def test_the_handshake_is_refused(backend, token, case):
    headers = {"Authorization": f"Bearer {token('manager')}"}
    if case == "expired":
        headers["Authorization"] = f"Bearer {token('manager', ttl=timedelta(seconds=-5))}"
    elif case == "no token":
        headers = {}
    elif case == "connector role":
        headers["Authorization"] = f"Bearer {token('connector', system='queue')}"
    origin = Origin("https://elsewhere.example") if case == "foreign origin" else None
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(
            ws_url(backend), additional_headers=headers, origin=origin, open_timeout=10
        ):
            pass
    # refused before accept, the ASGI server answers 403 whatever the reason (docs/contract-notes.md)
    assert refused.value.response.status_code == 403


async def test_a_browser_brings_its_token_in_the_query_from_our_own_origin(backend, token):
    url = f"{ws_url(backend)}?token={token('manager')}"
    async with websockets.connect(url, origin=backend.url, open_timeout=10) as ws:
        assert set(await subscribe(ws, ["fallbacks"])) == {"fallbacks"}


def test_topics_are_the_contract_topics():
    assert set(TOPICS) == {
        "flow",
        "capacity",
        "journeys",
        "failures",
        "reconciliation",
        "fallbacks",
        "integrations",
        "alerts",
    }


async def test_a_query_token_becomes_a_header_and_leaves_the_logged_query():
    seen: list[dict[str, Any]] = []

    async def app(scope: Any, _receive: Any, _send: Any) -> None:
        seen.append(scope)

    server_scope = {
        "type": "websocket",
        "path": "/api/v1/live",
        "query_string": b"token=abc.def.ghi&x=1",
        "headers": [(b"host", b"example")],
    }
    await QueryTokenMiddleware(app)(server_scope, None, None)  # type: ignore[arg-type]
    # the server logs from its own scope object: the token must be gone from it too
    assert seen == [server_scope]
    assert server_scope["query_string"] == b"x=1"
    assert (b"authorization", b"Bearer abc.def.ghi") in server_scope["headers"]


async def test_a_replica_that_lost_the_bus_sends_its_clients_to_subscribe_again(server_urls, workdir, token):
    """Core NATS keeps nothing for a client away: the updates other replicas published while this one's bus
    connection was down never reach it. Its clients are told to subscribe again (1012), and their resume
    with the old epoch is a fresh snapshot, not a replay with a hole in it."""
    async with own_stack(server_urls["database_url"], workdir) as stack:
        async with connect(stack.backend, token("manager")) as ws:
            await ws.send(msgspec.json.encode({"op": "subscribe", "topics": ["flow"]}).decode())
            snapshot = await receive(ws)
            assert snapshot["op"] == "snapshot"
            stack.nats_server.stop()
            stack.nats_server.start()
            with pytest.raises(ConnectionClosed) as closed:
                async with asyncio.timeout(20):
                    while True:
                        await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
        async with connect(stack.backend, token("manager")) as ws:
            resume = {"op": "subscribe", "topics": ["flow"], "epoch": snapshot["epoch"],
                      "last_seq": {"flow": snapshot["seq"]}}
            await ws.send(msgspec.json.encode(resume).decode())
            again = await receive(ws)
            assert again["op"] == "snapshot" and again["epoch"] != snapshot["epoch"]


class _Received:
    """A subscriber of the hub that keeps what it is offered."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    def offer(self, topic: str, key: str, frame: dict[str, Any]) -> None:
        self.keys.append(key)

    def end(self, reason: str) -> None:
        raise AssertionError(f"ended: {reason}")


async def test_changes_the_bus_refuses_still_reach_this_replica_s_clients_every_one(settings, pool):
    """The first refused publish once dropped the transaction's remaining announcements, this replica's
    own clients' included."""
    nc = await nats_connect(settings)
    hub = LiveHub(nc)
    received = _Received()
    hub.register(received, "failures", None)
    await nc.close()  # the bus refuses every publish from now on
    async with pool.acquire() as conn, LiveBus(nc, hub).after_commit(conn) as announce:
        for key in ("a", "b", "c"):
            announce("failures", None, key, {"id": key})
    assert received.keys == ["a", "b", "c"]
