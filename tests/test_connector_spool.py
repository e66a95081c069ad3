"""The spool: events made while NATS is down, or before a connector restart, reach JetStream once each."""

from __future__ import annotations

from collections import Counter

import nats.errors

from connectors.sdk import ConnectorRuntime
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
