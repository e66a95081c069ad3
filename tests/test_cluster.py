"""The clustered topology without Docker: three NATS nodes (streams with three replicas) and two backends.
One NATS node — the stream's leader — and one backend are SIGKILLed mid-run; nothing is lost or doubled."""

from __future__ import annotations

import asyncio
import os

import nats
import nats.errors
import pytest

from backend import messaging
from switchboard import bus
from tests.support.waits import eventually
from tools import chaos, chaos_plan
from tools.backend_process import BackendProcess
from tools.bench.common import scratch_database
from tools.embedded import ClusterMembership, EmbeddedNats, EmbeddedNatsCluster, free_port

EVENTS = 3000


@pytest.mark.slow
async def test_losing_a_nats_node_and_a_backend_loses_nothing(server_urls, workdir, uid):
    cluster = EmbeddedNatsCluster(workdir / f"cluster-{uid}")
    cluster.start()
    backends: list[BackendProcess] = []
    try:
        async with scratch_database(server_urls["database_url"], "cluster") as database_url:
            env = {**os.environ, "SWITCHBOARD_DATABASE_URL": database_url,
                   "SWITCHBOARD_NATS_URL": cluster.url,
                   "SWITCHBOARD_NATS_CREDS": cluster.creds or "", "SWITCHBOARD_STREAM_REPLICAS": "3",
                   "SWITCHBOARD_DATA_DIR": str(workdir), "SWITCHBOARD_LOG_LEVEL": "WARNING"}
            backends = [BackendProcess(env, workdir / f"cluster-backend-{i}.log").start() for i in range(2)]
            for b in backends:
                b.wait_ready()

            plan = chaos_plan.make_plan(EVENTS, seed=5)
            tally = chaos.Tally()
            publisher = asyncio.create_task(chaos.publish_all(cluster.url, plan.messages, tally,
                                                              cluster.creds))
            # a publisher that failed early raises where it is awaited below, not after the suite's timeout
            while len(tally.acknowledged) < EVENTS // 3 and not publisher.done():
                await asyncio.sleep(0.05)
            nc = await messaging.connect(cluster.url, "test-cluster", cluster.creds)
            info = await nc.jetstream().stream_info(messaging.EVENTS_STREAM)
            assert info.config.num_replicas == 3
            assert info.cluster is not None
            leader = next(n for n in cluster.nodes
                          if n.cluster and n.cluster.server_name == info.cluster.leader)
            leader.kill()
            backends[0].kill()
            await publisher
            await nc.close()

            async def all_applied() -> bool:
                return (await chaos.count_applied(database_url) or 0) >= EVENTS

            await eventually(all_applied, timeout=45)
            figures = await chaos.verify(database_url, tally, plan.journeys, crm=None)
            assert len(tally.acknowledged) == EVENTS
            assert (figures["applied"], figures["lost"], figures["applied_twice"]) == (EVENTS, 0, 0)
            assert figures["mismatched_journeys"] == 0
            survivor = backends[1].process
            assert survivor is not None and survivor.poll() is None, "the surviving backend carried on"

            async def survivor_ready() -> bool:  # one probe allows 1 s: a loaded machine may take longer
                return await asyncio.to_thread(backends[1].ready)

            await eventually(survivor_ready)
    finally:
        for b in backends:
            b.stop()
        cluster.stop()


async def servers_answering(cluster: EmbeddedNatsCluster) -> int:
    """How many servers answer the system account's ping: the nodes that joined the cluster."""
    assert cluster.issuer is not None
    nc = await bus.connect(cluster.url, "test-cluster-sys", creds=str(cluster.issuer.monitor_creds()))
    try:
        inbox = nc.new_inbox()
        answers = await nc.subscribe(inbox)
        await nc.publish("$SYS.REQ.SERVER.PING", b"", reply=inbox)
        await asyncio.sleep(1.0)
        return answers.pending_msgs
    finally:
        await nc.close()


async def test_a_node_or_client_without_credentials_cannot_join_the_cluster(workdir, uid):
    cluster = EmbeddedNatsCluster(workdir / f"cluster-auth-{uid}")
    cluster.start()
    intruder: EmbeddedNats | None = None
    try:
        assert await eventually(lambda: _all_three(cluster), timeout=20)
        # a node routed at the cluster without the route password
        route_ports = cluster.nodes[0].cluster.route_ports  # type: ignore[union-attr]
        port = free_port()
        membership = ClusterMembership("switchboard", "intruder", port, [*route_ports, port])
        intruder = EmbeddedNats(workdir / f"cluster-auth-{uid}" / "intruder", auth=False, cluster=membership)
        intruder.start()
        await eventually(lambda: _logged(intruder, "Authorization Violation"), timeout=10)
        assert await servers_answering(cluster) == 3
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await bus.connect(cluster.url, "test-anonymous", reconnect=False, connect_timeout=2)
    finally:
        if intruder is not None:
            intruder.stop()
        cluster.stop()


async def _all_three(cluster: EmbeddedNatsCluster) -> bool:
    return await servers_answering(cluster) == 3


async def _logged(server: EmbeddedNats, text: str) -> bool:
    return text in (server.data_dir / "nats-server.log").read_text()
