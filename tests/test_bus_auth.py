"""Trust on the bus (CONTRACT section 8), on real servers: an authenticated NATS of this module's own
(always, even when the suite runs against an unauthenticated NATS), a backend on it, and connector
profiles issued by `switchboard connector profile`. Each refusal compares the state before and after."""

from __future__ import annotations

import asyncio
import getpass
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg
import msgspec
import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig
from nats.js.errors import NotFoundError

from backend import messaging
from connectors.sdk import Connector, ConnectorRuntime, Outcome
from switchboard import bus
from switchboard.commands import COMMANDS_STREAM, Command, consumer_name
from switchboard.events import SEED_SYSTEMS, nats_msg_id
from switchboard.natsauth import inbox_prefix
from switchboard.snapshots import SnapshotPage, SnapshotRecord, SnapshotRequest, decode_page, snapshot_subject
from tests.support.bus_world import BusWorld, bus_world
from tests.support.events import cloud_event, publish
from tests.support.waits import eventually

REFUSED = (nats.errors.TimeoutError, nats.errors.NoRespondersError, TimeoutError)


@pytest.fixture(scope="module")
async def world(server_urls, workdir) -> AsyncIterator[BusWorld]:
    async with bus_world(server_urls, workdir / f"bus-auth-{uuid.uuid4().hex[:6]}") as made:
        yield made


async def as_connector(profile: dict[str, str], system: str) -> tuple[NATS, list[Exception]]:
    """A connection with a profile's credentials; the server's refusals land in the list."""
    errors: list[Exception] = []

    async def collect(exc: Exception) -> None:
        errors.append(exc)

    nc = await bus.connect(profile["SWITCHBOARD_NATS_URL"], f"test-{system}",
                           creds=profile["SWITCHBOARD_NATS_CREDS"],
                           inbox_prefix=profile.get("SWITCHBOARD_CONNECTOR_INBOX") or inbox_prefix(system),
                           reconnect=False, error_cb=collect)
    return nc, errors


async def stream_count(world: BusWorld, stream: str = messaging.EVENTS_STREAM) -> int:
    return (await world.nc.jetstream().stream_info(stream)).state.messages


async def consumer_names(world: BusWorld) -> dict[str, list[str]]:
    js = world.nc.jetstream()
    streams = (messaging.EVENTS_STREAM, COMMANDS_STREAM)
    return {s: sorted(c.name for c in await js.consumers_info(s)) for s in streams}


def violations(errors: list[Exception]) -> str:
    return " ".join(str(e) for e in errors)


def holds(predicate: Callable[[], object]) -> Callable[[], Awaitable[object]]:
    async def probe() -> object:
        return predicate()

    return probe


def collector(into: list[bytes]) -> Callable[[Msg], Awaitable[None]]:
    async def keep(msg: Msg) -> None:
        into.append(msg.data)

    return keep


async def test_an_anonymous_client_is_refused(world):
    before = await stream_count(world)
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await bus.connect(world.server.url, "test-anonymous", reconnect=False, connect_timeout=2)
    assert await stream_count(world) == before


async def test_a_queue_connector_cannot_publish_a_crm_event(world, uid):
    nc, errors = await as_connector(world.profile("queue"), "queue")
    before = await stream_count(world)
    event = cloud_event("customer.priority_changed", f"crm:C-{uid}", {"site": f"s-{uid}", "priority": "high",
                                                                      "reason_code": "VIP"})
    with pytest.raises(REFUSED):
        await nc.jetstream().publish("svc.events.crm.customer.priority_changed", msgspec.json.encode(event),
                                     timeout=1)
    await nc.publish("svc.events.crm.customer.priority_changed", msgspec.json.encode(event))
    await nc.flush()
    refused = 'permissions violation for publish to "svc.events.crm'
    await eventually(holds(lambda: refused in violations(errors)))
    assert await stream_count(world) == before
    await nc.close()


async def test_a_connector_cannot_read_another_systems_commands(world, uid):
    nc, errors = await as_connector(world.profile("queue"), "queue")
    js = world.nc.jetstream()
    crm_consumer = await js.consumer_info(COMMANDS_STREAM, consumer_name("crm"))
    seen: list[bytes] = []
    await nc.subscribe("svc.commands.crm.>", cb=collector(seen))
    await nc.subscribe("svc.commands.>", cb=collector(seen))
    await nc.flush()
    command = Command(id=f"cmd-{uid}", system="crm", command="journey.summary", journey_id=uuid.uuid4(),
                      refs=[f"crm:C-{uid}"], site=f"s-{uid}", data={}, attempt=1,
                      created_at=datetime.now(UTC))
    await js.publish("svc.commands.crm.journey.summary", msgspec.json.encode(command),
                     headers={"Nats-Msg-Id": command.id})
    with pytest.raises(REFUSED):  # crm's own consumer, through the JetStream API
        await nc.request(f"$JS.API.CONSUMER.MSG.NEXT.{COMMANDS_STREAM}.{consumer_name('crm')}",
                         b'{"batch":1}', timeout=1)
    # the server's refusal comes on its own, after the request's: a subscription it refused is never sent
    # anything, so once the refusal is here what was seen is all there will be
    await eventually(holds(lambda: 'permissions violation for subscription to "svc.commands.crm.>"'
                                   in violations(errors)))
    await nc.flush()
    assert seen == []
    after = await js.consumer_info(COMMANDS_STREAM, consumer_name("crm"))
    # nothing handed out to the impostor
    assert after.delivered.stream_seq == crm_consumer.delivered.stream_seq
    await nc.close()


async def test_a_connector_cannot_answer_another_systems_snapshot_requests(world, uid):
    nc, errors = await as_connector(world.profile("queue"), "queue")
    invented = SnapshotPage(system="crm", site=f"s-{uid}", day=date.today(), as_of=datetime.now(UTC),
                            next_cursor=None,
                            records=[SnapshotRecord(ref=f"crm:C-{uid}", site=f"s-{uid}", stage="completed",
                                                    updated_at=datetime.now(UTC))])

    async def answer(msg: Msg) -> None:
        await msg.respond(msgspec.json.encode(invented))

    await nc.subscribe(snapshot_subject("crm"), cb=answer)
    await nc.flush()
    ask = msgspec.json.encode(SnapshotRequest(site=f"s-{uid}", day=date.today()))
    with pytest.raises(REFUSED):
        await world.nc.request(snapshot_subject("crm"), ask, timeout=1)
    await eventually(holds(lambda: f'subscription to "{snapshot_subject("crm")}"' in violations(errors)))
    await nc.close()


async def test_a_site_limited_connector_cannot_answer_another_sites_snapshot_requests(world, uid):
    """Else it could invent another site's records: drift there, and a repair that takes its values."""
    site, other = f"mine-{uid}", f"theirs-{uid}"
    nc, errors = await as_connector(world.profile("queue", site), "queue")
    invented = SnapshotPage(system="queue", site=other, day=date.today(), as_of=datetime.now(UTC),
                            next_cursor=None,
                            records=[SnapshotRecord(ref=f"queue:T-{uid}", site=other, stage="completed",
                                                    updated_at=datetime.now(UTC))])

    async def answer(msg: Msg) -> None:
        await msg.respond(msgspec.json.encode(invented))

    for subject in (snapshot_subject("queue"), snapshot_subject("queue", other), "svc.snapshot.queue.>"):
        await nc.subscribe(subject, cb=answer)
    await nc.subscribe(snapshot_subject("queue", site), cb=answer)  # its own site's: allowed
    await nc.flush()
    ask = msgspec.json.encode(SnapshotRequest(site=other, day=date.today()))
    for subject in (snapshot_subject("queue"), snapshot_subject("queue", other)):
        with pytest.raises(REFUSED):
            await world.nc.request(subject, ask, timeout=1)
    await eventually(holds(lambda: all(f'subscription to "{subject}"' in violations(errors) for subject in (
        "svc.snapshot.queue", f"svc.snapshot.queue.{other}", "svc.snapshot.queue.>"))))
    assert f'subscription to "svc.snapshot.queue.{site}"' not in violations(errors)
    await nc.close()


async def test_only_backends_publish_or_read_live_updates(world, uid):
    nc, errors = await as_connector(world.profile("queue"), "queue")
    by_connector: list[bytes] = []
    by_backend: list[bytes] = []
    await nc.subscribe("svc.live.>", cb=collector(by_connector))
    await world.nc.subscribe(f"svc.live.probe-{uid}", cb=collector(by_backend))
    await nc.flush()
    await world.nc.flush()
    await nc.publish(f"svc.live.probe-{uid}", b'{"forged": true}')
    await nc.flush()
    await world.nc.publish(f"svc.live.probe-{uid}", b'{"real": true}')
    await world.nc.flush()
    await eventually(holds(lambda: by_backend))
    # both refused by the server, so neither the forged update nor any other can arrive after this
    await eventually(holds(lambda: f'publish to "svc.live.probe-{uid}"' in violations(errors)
                           and 'subscription to "svc.live.>"' in violations(errors)))
    await world.nc.flush()
    assert by_backend == [b'{"real": true}'] and by_connector == []
    await nc.close()


async def test_a_connector_cannot_delete_or_purge_streams_or_consumers_nor_create_one(world):
    nc, _ = await as_connector(world.profile("queue"), "queue")
    events_before = await stream_count(world)
    consumers_before = await consumer_names(world)
    assert messaging.APPLY_CONSUMER in consumers_before[messaging.EVENTS_STREAM]
    for subject in (f"$JS.API.STREAM.DELETE.{messaging.EVENTS_STREAM}",
                    f"$JS.API.STREAM.PURGE.{messaging.EVENTS_STREAM}",
                    f"$JS.API.CONSUMER.DELETE.{messaging.EVENTS_STREAM}.{messaging.APPLY_CONSUMER}",
                    f"$JS.API.STREAM.INFO.{messaging.EVENTS_STREAM}",
                    f"$JS.API.CONSUMER.INFO.{COMMANDS_STREAM}.{consumer_name('crm')}"):
        with pytest.raises(REFUSED):
            await nc.request(subject, b"", timeout=1)
    with pytest.raises(REFUSED):
        await nc.jetstream(timeout=1).add_consumer(COMMANDS_STREAM, ConsumerConfig(
            durable_name="sneaky", filter_subject="svc.commands.crm.>"))
    assert await stream_count(world) == events_before
    assert await consumer_names(world) == consumers_before
    await nc.close()


class Desk(Connector):
    """A queue connector with one record upstream, that does every command it is sent."""

    system = "queue"
    commands = frozenset({"staff.alert"})

    def __init__(self, site: str, ref: str) -> None:
        super().__init__()
        self.site, self.ref = site, ref
        self.handled: list[str] = []

    async def snapshot(self, site: str, day: date) -> Sequence[SnapshotRecord]:
        return [SnapshotRecord(ref=f"queue:{self.ref}", site=self.site, stage="waiting",
                               updated_at=datetime.now(UTC))] if site == self.site else []

    async def handle(self, command: Command) -> Outcome:
        self.handled.append(command.id)
        return Outcome("ok")


async def applied(world: BusWorld, source: str, event_id: str) -> bool:
    conn = await asyncpg.connect(world.database_url)
    try:
        return bool(await conn.fetchval("SELECT count(*) FROM events WHERE source = $1 AND id = $2",
                                        source, event_id))
    finally:
        await conn.close()


async def test_a_connector_from_a_profile_publishes_answers_snapshots_and_consumes_its_commands(
        world, uid, tmp_path):
    site = f"desk-{uid}"
    profile = world.profile("queue", site)
    assert Path(profile["SWITCHBOARD_NATS_CREDS"]).stat().st_mode & 0o777 == 0o600
    assert profile["SWITCHBOARD_CONNECTOR_SITES"] == site
    desk = Desk(site, f"T-{uid}")
    async with ConnectorRuntime(desk, nats_url=profile["SWITCHBOARD_NATS_URL"], data_dir=tmp_path,
                                sites=(site,), creds=profile["SWITCHBOARD_NATS_CREDS"],
                                inbox=profile["SWITCHBOARD_CONNECTOR_INBOX"],
                                heartbeat_interval=1) as runtime:
        async with asyncio.timeout(30):
            await runtime.ready.wait()
        arrived = desk.event("customer.arrived", f"T-{uid}", {"site": site})
        await desk.emit(arrived)
        await eventually(lambda: applied(world, arrived.source, arrived.id), timeout=20)

        ask = msgspec.json.encode(SnapshotRequest(site=site, day=date.today()))
        reply = await world.nc.request(snapshot_subject("queue", site), ask, timeout=5)
        assert [r.ref for r in decode_page(reply.data).records] == [f"queue:T-{uid}"]
        # it answers on its sites' subjects only: the system's own is another connector's to answer
        with pytest.raises(REFUSED):
            await world.nc.request(snapshot_subject("queue"), ask, timeout=1)

        command = Command(id=f"cmd-{uid}", system="queue", command="staff.alert",
                          journey_id=uuid.uuid4(),
                          refs=[f"queue:T-{uid}"], site=site, data={}, attempt=1,
                          created_at=datetime.now(UTC))
        await world.nc.jetstream().publish("svc.commands.queue.staff.alert", msgspec.json.encode(command),
                                           headers={"Nats-Msg-Id": command.id})
        await eventually(holds(lambda: desk.handled == [command.id] and runtime.commands_answered == 1),
                         timeout=20)
        assert await runtime.publisher.drain(10)  # its command.result went out through its permissions

        # through `$JS.ACK.SVC_COMMANDS.connector-queue.>`, its only ack subject
        async def acknowledged() -> bool:
            info = await world.nc.jetstream().consumer_info(COMMANDS_STREAM, consumer_name("queue"))
            return info.num_ack_pending == 0 and info.num_pending == 0 and info.delivered.stream_seq > 0

        await eventually(acknowledged, timeout=10)

    # its heartbeats went out on its site's subject, the only heartbeat subject it may use, and are filed
    # as its own at that site
    async def heartbeat_filed() -> bool:
        conn = await asyncpg.connect(world.database_url)
        try:
            return await conn.fetchval("SELECT upstream FROM heartbeats WHERE system = 'queue'"
                                       " AND connector = $1", f"{desk.name}@{site}") == "up"
        finally:
            await conn.close()

    assert await eventually(heartbeat_filed, timeout=10)


class Summaries(Connector):
    """A crm connector that does every journey.summary it is sent."""

    system = "crm"
    commands = frozenset({"journey.summary"})

    def __init__(self) -> None:
        super().__init__()
        self.handled: list[str] = []

    async def handle(self, command: Command) -> Outcome:
        self.handled.append(command.id)
        return Outcome("ok")


async def test_a_site_limited_connector_does_and_answers_only_its_sites_commands(world, uid, tmp_path):
    """The system's connectors share one consumer: another site's command goes back for that site's
    connector, never done here; its own is answered on its site's subject, naming the site."""
    site, other = f"desk-{uid}", f"else-{uid}"
    profile = world.profile("crm", site)
    js = world.nc.jetstream()
    commands = [Command(id=f"cmd-{uid}-{at}", system="crm", command="journey.summary",
                        journey_id=uuid.uuid4(), refs=[f"crm:C-{uid}"], site=at, created_at=datetime.now(UTC))
                for at in (other, site)]
    summaries = Summaries()
    async with ConnectorRuntime(summaries, nats_url=profile["SWITCHBOARD_NATS_URL"], data_dir=tmp_path,
                                sites=(site,), creds=profile["SWITCHBOARD_NATS_CREDS"],
                                inbox=profile["SWITCHBOARD_CONNECTOR_INBOX"],
                                heartbeat_interval=1) as runtime:
        for command in commands:
            await js.publish("svc.commands.crm.journey.summary", msgspec.json.encode(command),
                             headers={"Nats-Msg-Id": command.id})
        await eventually(holds(lambda: runtime.commands_answered == 1), timeout=20)
        assert await runtime.publisher.drain(10)

        async def passed_back() -> bool:  # the other site's came back to it at least once, undone
            return (await js.consumer_info(COMMANDS_STREAM, consumer_name("crm"))).num_redelivered > 0

        await eventually(passed_back, timeout=10)
        assert summaries.handled == [commands[1].id]
    answer = await js.get_last_msg(messaging.EVENTS_STREAM, f"svc.events.crm.command.result.{site}")
    assert msgspec.json.decode(answer.data)["data"] == {"command_id": commands[1].id, "status": "ok",
                                                        "site": site}
    # the harness takes the other site's command (and any other test's) off the shared consumer: later
    # tests start clean
    pending = await js.pull_subscribe_bind(durable=consumer_name("crm"), stream=COMMANDS_STREAM)
    taken: list[str] = []
    while commands[0].id not in taken:
        [message] = await pending.fetch(1, timeout=35)
        taken.append(msgspec.json.decode(message.data)["id"])
        await message.ack()


async def test_a_site_limited_connector_cannot_publish_for_another_site(world, uid):
    site, other = f"mine-{uid}", f"theirs-{uid}"
    nc, _ = await as_connector(world.profile("queue", site), "queue")
    js = nc.jetstream()
    before = await stream_count(world)
    elsewhere = cloud_event("customer.arrived", f"queue:T-{uid}", {"site": other})
    body = msgspec.json.encode(elsewhere)
    for subject in (f"svc.events.queue.customer.arrived.{other}", "svc.events.queue.customer.arrived",
                    # a heartbeat too goes on its site's subject: on the system's it could speak as another
                    # site's connector
                    "svc.events.queue.connector.heartbeat"):
        with pytest.raises(REFUSED):
            await js.publish(subject, body, timeout=1)
    assert await stream_count(world) == before
    # on its own site's subject with another site inside: NATS lets it through, the backend refuses it
    await js.publish(f"svc.events.queue.customer.arrived.{site}", body,
                     headers={"Nats-Msg-Id": nats_msg_id(elsewhere["source"], elsewhere["id"])})
    conn = await asyncpg.connect(world.database_url)
    try:
        failure = await eventually(lambda: conn.fetchrow(
            "SELECT kind, status FROM failures WHERE event_source = $1 AND event_id = $2",
            elsewhere["source"], elsewhere["id"]))
        assert (failure["kind"], failure["status"]) == ("unauthorized_source", "open")
        assert not await applied(world, elsewhere["source"], elsewhere["id"])
    finally:
        await conn.close()
    await nc.close()


async def test_a_revoked_profile_is_refused_without_restarting_nats(world, uid):
    pid = world.server.process.pid
    profile = world.profile("core")
    nc, _ = await as_connector(profile, "core")
    eligibility = cloud_event("eligibility.checked", f"core:E-{uid}", {"site": f"s-{uid}", "result": "passed",
                                                                       "reason_code": "OK"})
    await publish(nc.jetstream(), eligibility)  # it works before
    conn = await asyncpg.connect(world.database_url)
    audit_before = await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'connector.revoke'")

    assert "revoked" in world.cli("revoke", "--system", "core")
    await eventually(holds(lambda: nc.is_closed or not nc.is_connected), timeout=10)
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await as_connector(profile, "core")
    assert world.server.process.pid == pid and world.server.process.poll() is None
    audit = await conn.fetchrow(
        "SELECT actor, target FROM audit_log WHERE action = 'connector.revoke' ORDER BY id DESC")
    revocations = await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'connector.revoke'")
    assert revocations == audit_before + 1
    assert audit["actor"] == f"cli-{getpass.getuser()}" and audit["target"] == "system:core"
    await conn.close()
    # a profile issued after the revocation connects
    fresh, _ = await as_connector(world.profile("core"), "core")
    await publish(fresh.jetstream(), cloud_event("eligibility.checked", f"core:F-{uid}", {
        "site": f"s-{uid}", "result": "passed", "reason_code": "OK"}))
    await fresh.close()


async def test_the_backend_makes_a_command_consumer_for_every_system(world):
    names = (await consumer_names(world))[COMMANDS_STREAM]
    assert {consumer_name(s) for s in SEED_SYSTEMS} <= set(names)
    with pytest.raises(NotFoundError):
        await world.nc.jetstream().consumer_info(COMMANDS_STREAM, consumer_name("nobody"))


def test_a_profile_whose_names_would_widen_its_permissions_is_refused(world):
    issued = len(world.server.issuer.identities())
    for args in (["--system", "queue", "--site", "*"], ["--system", "queue", "--site", "north.>"],
                 ["--system", "*"], ["--system", "queue.x"]):
        with pytest.raises(subprocess.CalledProcessError):
            world.cli("profile", *args, "--out", str(world.folder / "wild"))
    assert len(world.server.issuer.identities()) == issued
    assert not list((world.folder / "wild").glob("*.creds"))


async def test_the_system_account_user_only_updates_accounts_and_the_monitor_only_reads(world):
    issuer = world.server.issuer
    assert issuer is not None
    await _may_only(world, issuer.system_creds(), "$SYS.REQ.CLAIMS.UPDATE", "$SYS.REQ.SERVER.PING")
    await _may_only(world, issuer.monitor_creds(), "$SYS.REQ.SERVER.PING.CONNZ", "$SYS.REQ.CLAIMS.UPDATE")


async def _may_only(world: BusWorld, creds: Path, allowed: str, refused: str) -> None:
    errors: list[Exception] = []

    async def collect(exc: Exception) -> None:
        errors.append(exc)

    nc = await bus.connect(world.server.url, "test-sys", creds=str(creds), reconnect=False, error_cb=collect)
    try:
        answer = msgspec.json.decode((await nc.request(allowed, b"{}", timeout=5)).data)
        assert "server" in answer, answer  # a server's answer: to a ping its state, to a bad JWT an error
        await nc.publish(refused, b"{}")
        await nc.flush()
        # (the client reports the subject in lower case)
        refusal = f'permissions violation for publish to "{refused.lower()}"'
        await eventually(holds(lambda: refusal in violations(errors)))
    finally:
        await nc.close()
