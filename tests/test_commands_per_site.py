"""A system commanded per site (SWITCHBOARD_COMMANDS_PER_SITE): each site's commands on a subject and a
consumer of their own, which only that site's connector profiles may read. On real servers: an
authenticated NATS and a backend of this module's own (queue commanded per site), profiles issued by
`switchboard connector profile`, commands made by the v1 rules."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import msgspec
import nats.errors
import nats.js.errors
import pytest
from nats.js.api import DeliverPolicy

from backend import messaging
from backend.app import create_app
from connectors.sdk import Connector, ConnectorRuntime, Outcome
from switchboard import bus
from switchboard.commands import COMMANDS_STREAM, PER_SITE_METADATA, Command, command_subject, consumer_name
from switchboard.natsauth import inbox_prefix
from tests.support.backends import JWT_SECRET
from tests.support.bus_world import BusWorld, bus_world
from tests.support.events import cloud_event, publish
from tests.support.settings import backend_settings
from tests.support.waits import eventually

PER_SITE = {"SWITCHBOARD_COMMANDS_PER_SITE": "queue", "SWITCHBOARD_COMMAND_RELAY_INTERVAL_S": "0.1",
            "SWITCHBOARD_COMMAND_ANSWER_TIMEOUT_S": "10"}


@pytest.fixture(scope="module")
async def world(server_urls, workdir) -> AsyncIterator[BusWorld]:
    async with bus_world(server_urls, workdir / f"per-site-{uuid.uuid4().hex[:6]}", PER_SITE) as made:
        yield made


class Desk(Connector):
    """A queue connector that does every visit context it is sent and remembers each command's site and id."""

    system = "queue"
    commands = frozenset({"visit.context"})

    def __init__(self, instance: str) -> None:
        super().__init__(instance)
        self.sites: list[str] = []
        self.ids: list[str] = []

    async def handle(self, command: Command) -> Outcome:
        self.sites.append(command.site)
        self.ids.append(command.id)
        return Outcome("ok")


def site_runtime(desk: Desk, profile: dict[str, str], site: str, data_dir: Path) -> ConnectorRuntime:
    """A desk behind a connector from a profile limited to `site`, as `connector run` makes it."""
    return ConnectorRuntime(desk, nats_url=profile["SWITCHBOARD_NATS_URL"], sites=(site,),
                            creds=profile["SWITCHBOARD_NATS_CREDS"],
                            inbox=profile["SWITCHBOARD_CONNECTOR_INBOX"], data_dir=data_dir,
                            heartbeat_interval=1)


def holds(predicate: Callable[[], object]) -> Callable[[], Awaitable[object]]:
    async def probe() -> object:
        return predicate()

    return probe


def phone_booking(site: str) -> dict[str, object]:
    """An appointment booked by phone at `site`: the v1 rules send queue a `visit.context` for it."""
    return cloud_event("appointment.booked", f"appointments:A-{uuid.uuid4().hex[:8]}", {
        "site": site, "service": "passport", "channel": "phone",
        "slot_start": (datetime.now(UTC) + timedelta(hours=2)).isoformat()})


async def command_statuses(world: BusWorld, site: str) -> list[str]:
    conn = await asyncpg.connect(world.database_url)
    try:
        return [r["status"] for r in await conn.fetch("SELECT status FROM commands WHERE site = $1", site)]
    finally:
        await conn.close()


def test_a_system_not_commanded_cannot_be_commanded_per_site():
    with pytest.raises(SystemExit, match="SWITCHBOARD_COMMANDS_PER_SITE names nosuch: not a system"):
        create_app(backend_settings(database_url="postgresql://unused", nats_url="nats://unused",
                                    jwt_secret=JWT_SECRET, commands_per_site=("nosuch",)))


async def test_each_sites_connector_gets_its_sites_commands_only(world, uid, tmp_path):
    # a site holding a dot: one subject token and a consumer name all the same
    north, south = f"north-{uid}", f"south.{uid}"
    desks = {site: Desk(site.replace(".", "-")) for site in (north, south)}
    runtimes = []
    for site, desk in desks.items():
        profile = world.profile("queue", site)
        runtimes.append(site_runtime(desk, profile, site, tmp_path / site))
    js = world.nc.jetstream()
    try:
        for runtime in runtimes:
            await runtime.start()
            async with asyncio.timeout(30):
                await runtime.ready.wait()
        for site in (north, south, north):
            await publish(js, phone_booking(site))

        async def answered() -> bool:
            return (await command_statuses(world, north) == ["ok", "ok"]
                    and await command_statuses(world, south) == ["ok"])

        assert await eventually(answered, timeout=30)
        assert desks[north].sites == [north, north]
        assert desks[south].sites == [south]
    finally:
        for runtime in runtimes:
            await runtime.stop()
    # each site's commands went to its own subject and consumer, none to the system's shared one
    info = await js.consumer_info(COMMANDS_STREAM, consumer_name("queue"))
    assert PER_SITE_METADATA.items() <= (info.config.metadata or {}).items()
    assert info.delivered.stream_seq == 0
    for site, count in ((north, 2), (south, 1)):
        site_consumer = await js.consumer_info(COMMANDS_STREAM, consumer_name("queue", site))
        assert site_consumer.config.filter_subject == f"svc.commands.queue@{site.replace('.', '~')}.>"
        assert site_consumer.ack_floor.stream_seq > 0 and site_consumer.num_pending == 0
        held = await js.stream_info(COMMANDS_STREAM, subjects_filter=site_consumer.config.filter_subject)
        assert sum((held.state.subjects or {}).values()) == count


async def test_a_connector_of_one_site_cannot_read_another_sites_commands(world, uid):
    north, south = f"north-{uid}", f"south-{uid}"
    await publish(world.nc.jetstream(), phone_booking(south))  # no connector of south runs
    js = world.nc.jetstream()

    async def made() -> bool:
        try:
            return (await js.consumer_info(COMMANDS_STREAM, consumer_name("queue", south))).num_pending > 0
        except nats.js.errors.NotFoundError:
            return False

    assert await eventually(made, timeout=30)
    profile = world.profile("queue", north)
    errors: list[Exception] = []

    async def collect(exc: Exception) -> None:
        errors.append(exc)

    nc = await bus.connect(profile["SWITCHBOARD_NATS_URL"], "test-north",
                           creds=profile["SWITCHBOARD_NATS_CREDS"],
                           inbox_prefix=profile["SWITCHBOARD_CONNECTOR_INBOX"],
                           reconnect=False, error_cb=collect)
    try:
        for api in ("MSG.NEXT", "INFO"):
            with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
                await nc.request(f"$JS.API.CONSUMER.{api}.{COMMANDS_STREAM}.{consumer_name('queue', south)}",
                                 b'{"batch": 1, "expires": 500000000}', timeout=1)
        # its own site's consumer it may ask about (made when north's first command comes)
        with pytest.raises(nats.js.errors.NotFoundError):
            await nc.jetstream().consumer_info(COMMANDS_STREAM, consumer_name("queue", north))
    finally:
        await nc.close()
    refused = " ".join(str(e) for e in errors).lower()
    assert "permissions violation" in refused and consumer_name("queue", south).lower() in refused
    south_consumer = await js.consumer_info(COMMANDS_STREAM, consumer_name("queue", south))
    assert south_consumer.delivered.consumer_seq == 0 and south_consumer.num_pending > 0


async def test_a_connector_of_one_site_cannot_listen_where_another_sites_pulls_are_answered(world, uid):
    """A pull's messages come to the inbox of whoever pulled: each site's profiles have an inbox of their own
    (a shared one per system let a north profile read the commands a south profile pulled)."""
    north, south = world.profile("queue", f"north-{uid}"), world.profile("queue", f"south-{uid}")
    assert north["SWITCHBOARD_CONNECTOR_INBOX"] != south["SWITCHBOARD_CONNECTOR_INBOX"]
    errors: list[Exception] = []

    async def collect(exc: Exception) -> None:
        errors.append(exc)

    nc = await bus.connect(north["SWITCHBOARD_NATS_URL"], "test-north-inbox",
                           creds=north["SWITCHBOARD_NATS_CREDS"],
                           inbox_prefix=north["SWITCHBOARD_CONNECTOR_INBOX"], reconnect=False,
                           error_cb=collect)
    try:
        for elsewhere in (south["SWITCHBOARD_CONNECTOR_INBOX"], inbox_prefix("queue")):
            await nc.subscribe(f"{elsewhere}.>")
            await nc.flush(timeout=2)
        await nc.subscribe(f"{north['SWITCHBOARD_CONNECTOR_INBOX']}.>")  # its own
        await nc.flush(timeout=2)
    finally:
        await nc.close()
    refused = " ".join(str(e) for e in errors).lower()
    assert refused.count("permissions violation for subscription") == 2, refused
    assert south["SWITCHBOARD_CONNECTOR_INBOX"].lower() in refused
    assert f"{inbox_prefix('queue')}.>".lower() in refused
    assert north["SWITCHBOARD_CONNECTOR_INBOX"].lower() not in refused


async def test_the_shared_consumer_says_when_its_system_is_commanded_per_site(world):
    js = world.nc.jetstream()
    queue = await js.consumer_info(COMMANDS_STREAM, consumer_name("queue"))
    crm = await js.consumer_info(COMMANDS_STREAM, consumer_name("crm"))
    assert PER_SITE_METADATA.items() <= (queue.config.metadata or {}).items()
    assert not PER_SITE_METADATA.items() <= (crm.config.metadata or {}).items()
    try:
        # told again without it (a backend started without the setting), the consumer no longer says so
        await messaging.ensure_streams(js, 120.0, systems=["queue"])
        queue = await js.consumer_info(COMMANDS_STREAM, consumer_name("queue"))
        assert not PER_SITE_METADATA.items() <= (queue.config.metadata or {}).items()
    finally:
        await messaging.ensure_streams(js, 120.0, systems=["queue"], per_site=frozenset({"queue"}))


async def test_a_site_connector_reads_its_sites_consumer_whatever_the_setting_and_binds_again(world, uid,
                                                                                              tmp_path):
    """The setting may change while a connector runs: it reads its sites' consumers all the same. A site
    consumer deleted and made again is bound to again, and delivers only what comes after it."""
    site = f"east.{uid}"
    js = world.nc.jetstream()
    profile = world.profile("queue", site)
    desk = Desk("east")

    async def command(n: int) -> Command:
        sent = Command(id=f"cmd-{uid}-{n}", system="queue", command="visit.context", journey_id=uuid.uuid4(),
                       refs=[f"queue:E-{uid}"], site=site, created_at=datetime.now(UTC))
        await js.publish(command_subject(sent, per_site=True), msgspec.json.encode(sent),
                         headers={"Nats-Msg-Id": sent.id})
        return sent

    try:
        await messaging.ensure_streams(js, 120.0, systems=["queue"])  # the system's consumer says nothing
        await js.add_consumer(COMMANDS_STREAM, messaging.site_command_consumer("queue", site))
        async with site_runtime(desk, profile, site, tmp_path) as runtime:
            async with asyncio.timeout(30):
                await runtime.ready.wait()
            first = await command(1)
            assert await eventually(holds(lambda: desk.ids == [first.id]), timeout=20)
            await js.delete_consumer(COMMANDS_STREAM, consumer_name("queue", site))
            await js.add_consumer(COMMANDS_STREAM, messaging.site_command_consumer("queue", site))
            second = await command(2)
            assert await eventually(holds(lambda: desk.ids == [first.id, second.id]), timeout=30), desk.ids
    finally:
        await messaging.ensure_streams(js, 120.0, systems=["queue"], per_site=frozenset({"queue"}))


async def test_the_relay_makes_a_missing_or_misconfigured_site_consumer_again(world, uid, tmp_path):
    """A site's consumer made with another deliver policy (JetStream will not update that) is made again,
    and so is one deleted: the command that went unanswered meanwhile is retried into the new one."""
    site = f"west-{uid}"
    js = world.nc.jetstream()
    name = consumer_name("queue", site)
    made_otherwise = messaging.site_command_consumer("queue", site).evolve(deliver_policy=DeliverPolicy.ALL)
    await js.add_consumer(COMMANDS_STREAM, made_otherwise)
    profile = world.profile("queue", site)
    desk = Desk("west")
    async with site_runtime(desk, profile, site, tmp_path) as runtime:
        async with asyncio.timeout(30):
            await runtime.ready.wait()
        await publish(js, phone_booking(site))

        async def settled(count: int) -> bool:
            return await command_statuses(world, site) == ["ok"] * count

        assert await eventually(lambda: settled(1), timeout=30)
        assert (await js.consumer_info(COMMANDS_STREAM, name)).config.deliver_policy == DeliverPolicy.NEW
        await js.delete_consumer(COMMANDS_STREAM, name)
        await publish(js, phone_booking(site))
        # published into the deleted consumer's place, unanswered for the answer timeout (10 s), then retried
        assert await eventually(lambda: settled(2), timeout=40)
    assert desk.sites == [site, site]
