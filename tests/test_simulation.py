"""The simulated branch network with the real backend: what `switchboard demo` shows a new user."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import msgspec

from connectors.sim.run import Simulation
from switchboard.snapshots import SnapshotRequest, decode_page, snapshot_subject
from tests.support.waits import eventually


async def test_a_simulated_branch_network_becomes_live_journeys_and_snapshots_are_the_systems_truth(
        api: httpx.AsyncClient, settings, token, uid, tmp_path, js):
    sites = [f"sim-{uid}-a", f"sim-{uid}-b"]
    headers = {"Authorization": f"Bearer {token('manager', sites)}"}
    systems = ["crm", "appointments", "queue", "contact_center", "core"]
    async with Simulation(systems=systems, sites=sites, creds=dict.fromkeys(systems, settings.bus.nats_creds),
                          speed=300, nats_url=settings.bus.nats_url, data_dir=tmp_path, arrivals_per_hour=30,
                          heartbeat_interval=1, seed=7, services={"passport": 10, "licence": 6}) as sim:

        async def served_everywhere():
            flow = (await api.get("/api/v1/flow", headers=headers)).json()["items"]
            done = {f["site"]: f["stages"].get("completed", 0) for f in flow}
            return flow if all(done.get(site, 0) >= 2 for site in sites) else None

        flow = await eventually(served_everywhere, timeout=60, interval=0.5)
        stages = {stage for f in flow for stage in f["stages"]}
        assert {"booked", "completed"} <= stages

        capacity = (await api.get("/api/v1/capacity", headers=headers)).json()["items"]
        assert {c["site"] for c in capacity} == set(sites)
        assert all(c["counters_open"] >= 3 for c in capacity)

        queue = sim.systems["queue"]
        reply = await js._nc.request(snapshot_subject("queue"), msgspec.json.encode(
            SnapshotRequest(site=sites[0], day=datetime.now(UTC).date(), limit=1000)), timeout=5)
        page = decode_page(reply.data)
        own = {ref for ref, r in queue.records.items() if r.site == sites[0]}  # read after: it only grows
        assert page.records and {r.ref for r in page.records} <= own
        queue_stages = {"arrived", "waiting", "called", "in_service", "completed"}
        assert all(r.stage in queue_stages for r in page.records)
        # the configured services
        assert {r.fields["service"] for r in page.records} <= {"passport", "licence"}
        # bookings were checked for eligibility
        assert sim.network.journeys > 0 and sim.systems["core"].records
