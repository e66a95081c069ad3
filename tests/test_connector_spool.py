"""The spool: events made while NATS is down, or before a connector restart, reach JetStream once each."""

from __future__ import annotations

from collections import Counter

import nats.errors
import pytest
from nats.aio.client import Client as NATS

from connectors.sdk import ConnectorRuntime
from connectors.sdk.publisher import Publisher
from connectors.sdk.spool import DONE_KEPT_S, Spool
from switchboard.events import CloudEvent, Upstream
from tests.support.connectors import Probe, own_jetstream, stream_events
from tests.support.waits import eventually

SUBJECT = "svc.events.queue.ticket.called"


async def test_spool_survives_a_nats_restart_and_a_connector_restart_with_nothing_lost_or_doubled(tmp_path,
                                                                                                   uid):
    site = f"spool-{uid}"
    async with own_jetstream(tmp_path / "nats") as (server, nc):
        connector = Probe()
        runtime = ConnectorRuntime(connector, nats_url=server.url, data_dir=tmp_path / "data",
                                   heartbeat_interval=60, creds=server.creds)
        await runtime.start()
        emitted = [connector.ticket_called(n, site) for n in range(40)]
        await connector.emit(*emitted)

        async def stored(n: int):
            try:
                events = await stream_events(nc, SUBJECT)
            except nats.errors.Error:  # the server is still starting up after its restart
                return None
            return events if len(events) >= n else None

        await eventually(lambda: stored(40))

        server.stop()  # NATS goes away: the connector keeps emitting into its spool
        while_down = [connector.ticket_called(n, site) for n in range(40, 80)]
        await connector.emit(*while_down)
        assert runtime.spool.pending() >= 40
        server.start()  # same folder, same port: clients reconnect
        await eventually(lambda: stored(80), timeout=30)

        server.stop()
        before_restart = [connector.ticket_called(n, site) for n in range(80, 120)]
        await connector.emit(*before_restart)

        async def disconnected():
            return runtime.nc is not None and not runtime.nc.is_connected

        await eventually(disconnected)
        await runtime.stop(drain_timeout=0)  # the connector process ends with these only in its spool
        assert runtime.publisher.acked < 120

        server.start()
        restarted = Probe()
        async with ConnectorRuntime(restarted, nats_url=server.url, data_dir=tmp_path / "data",
                                    creds=server.creds, heartbeat_interval=60) as again:
            await eventually(lambda: stored(120), timeout=30)
            await eventually(lambda: again.publisher.drain(0.1))
            assert again.spool.pending() == 0

        ids = Counter(e.id for e in await stream_events(nc, SUBJECT))
        assert set(ids) == {e.id for e in emitted + while_down + before_restart}
        assert max(ids.values()) == 1  # nothing doubled


def test_spool_forgets_commands_done_over_a_day_ago_when_it_opens(tmp_path):
    spool = Spool(tmp_path / "spool.db")
    spool.remember_done("cmd-old")
    spool.remember_done("cmd-recent")
    spool._db.execute("UPDATE done SET at = at - ? WHERE command_id = 'cmd-old'", (DONE_KEPT_S + 60,))
    spool.close()
    reopened = Spool(tmp_path / "spool.db")  # a restart long before a thousand more commands
    assert not reopened.was_done("cmd-old") and reopened.was_done("cmd-recent")
    reopened.close()


async def test_an_event_for_a_site_outside_the_connectors_profile_is_refused_before_the_spool(tmp_path):
    """NATS would refuse its publish for ever and hold back every later event: the SDK says so at once."""
    spool = Spool(tmp_path / "spool.db")
    publisher = Publisher(spool, sites=("north",))
    probe = Probe()
    with pytest.raises(ValueError, match="is for site 'south': this connector's profile publishes for north"):
        await publisher.emit([probe.ticket_called(1, "north"), probe.ticket_called(2, "south")])
    assert spool.pending() == 0  # nothing of the batch
    await publisher.emit([probe.ticket_called(3, "north")])
    assert [row[1] for row in spool.read_after(0, 10)] == [f"{SUBJECT}.north"]
    spool.close()


class _Flaky(Probe):
    """Its upstream status fails twice, as an author's code may: the heartbeats after still go out."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = 0

    async def upstream_status(self) -> Upstream:
        self.asked += 1
        if self.asked <= 2:
            raise ConnectionError("the upstream's status page timed out")
        return "up"


async def test_heartbeats_go_on_after_the_connectors_own_part_fails(tmp_path):
    async with own_jetstream(tmp_path / "nats") as (server, nc):
        connector = _Flaky()
        runtime = ConnectorRuntime(connector, nats_url=server.url, data_dir=tmp_path / "data",
                                   heartbeat_interval=0.2, creds=server.creds)
        await runtime.start()
        try:
            beats = await eventually(lambda: _at_least(nc, "svc.events.queue.connector.heartbeat", 2))
            assert connector.asked >= 4 and {b.data.upstream for b in beats} == {"up"}
        finally:
            await runtime.stop()


async def _at_least(nc: NATS, subject: str, n: int) -> list[CloudEvent] | None:
    events = await stream_events(nc, subject)
    return events if len(events) >= n else None
