"""Integration health, its live topic, the integrations figures and recovery pacing, on real backends,
Postgres and NATS. Each test has a system of its own (`LAB_SYSTEMS`), so no other test moves its health."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import nats
import pytest

from tests.support.backends import nats_connect
from tests.support.connector_double import ConnectorDouble, heartbeat
from tests.support.events import cloud_event, publish
from tests.support.live import connect, is_update, receive_until, subscribe
from tests.support.waits import eventually

SILENT_AFTER = timedelta(seconds=45)  # three intervals of the default 15 s


@pytest.fixture
async def nc(settings) -> AsyncIterator[nats.NATS]:
    client = await nats_connect(settings)
    yield client
    await client.close()


async def integration(api: httpx.AsyncClient, headers: dict[str, str], system: str) -> dict[str, Any] | None:
    response = await api.get("/api/v1/integrations", headers=headers)
    assert response.status_code == 200, response.text
    return next((i for i in response.json()["items"] if i["system"] == system), None)


async def with_status(api, headers, system, status, reason=None):
    item = await integration(api, headers, system)
    return item if item and item["status"] == status and reason in (None, item["reason"]) else None


async def test_silent_heartbeats_make_a_system_down_live_and_a_fresh_one_brings_it_up(
        api, backend, js, pool: asyncpg.Pool, token, uid):
    system, connector = "lab_health", f"lab-health-{uid}"
    reader = token("manager", [f"site-{uid}"])  # integrations belong to no site: any reader sees them
    headers = {"Authorization": f"Bearer {reader}"}
    try:
        async with connect(backend, reader) as ws:
            snapshot = (await subscribe(ws, ["integrations"]))["integrations"]
            assert system in {i["system"] for i in snapshot["data"]}
            # the last heartbeat is 3 s short of the limit: up now, down once the silence lasts
            await publish(js, heartbeat(system, connector, "up", age=SILENT_AFTER - timedelta(seconds=3)))
            up = await eventually(lambda: with_status(api, headers, system, "up", "heartbeats on time"))
            assert up["heartbeat_age_s"] < 45

            went_down, _ = await receive_until(
                ws, is_update("integrations", lambda f: f["key"] == system and f["data"]["status"] == "down"))
            assert went_down["site"] == "*"
            assert {"events_per_min", "held_commands", "apply_latency_p99_ms",
                    "pace"} <= went_down["data"].keys()
            assert went_down["data"]["reason"] == "no heartbeat for more than 45s (3 intervals)"
            down = await with_status(api, headers, system, "down")
            assert down and down["heartbeat_age_s"] >= 45 and down["since"] == went_down["data"]["since"]

            await publish(js, heartbeat(system, connector, "up"))
            back, _ = await receive_until(
                ws, is_update("integrations", lambda f: f["key"] == system and f["data"]["status"] == "up"))
            assert back["data"]["since"] > down["since"]
            assert (await with_status(api, headers, system, "up"))["heartbeat_age_s"] < 10
    finally:
        await pool.execute("DELETE FROM heartbeats WHERE connector = $1", connector)


async def test_a_change_is_published_once_whichever_replica_decides_it(
        backend, second_backend, js, pool: asyncpg.Pool, token, uid):
    """Every replica's monitor decides; the stored status lets only one of them announce the change."""
    system, connector = "lab_health", f"lab-once-{uid}"
    reader = token("manager", "*")
    try:
        async with connect(backend, reader) as ws:
            await subscribe(ws, ["integrations"])
            await publish(js, heartbeat(system, connector, "degraded"))
            first, _ = await receive_until(
                ws, is_update("integrations",
                              lambda f: f["key"] == system and f["data"]["status"] == "degraded"))
            # two replicas check every 0.5 s: a second announcement of the same change would come meanwhile
            with pytest.raises(AssertionError):
                await receive_until(ws, is_update("integrations", lambda f: f["key"] == system), timeout=3)
            assert first["data"]["reason"] == f"connector {connector} reports its upstream degraded"
    finally:
        await pool.execute("DELETE FROM heartbeats WHERE connector = $1", connector)


async def test_a_connector_reporting_degraded_then_down_moves_its_system(api, js, pool: asyncpg.Pool, token,
                                                                          uid):
    system, connector = "lab_degraded", f"lab-degraded-{uid}"
    headers = {"Authorization": f"Bearer {token('sre', '*')}"}
    try:
        await publish(js, heartbeat(system, connector, "degraded"))
        degraded = await eventually(lambda: with_status(api, headers, system, "degraded"))
        assert degraded["reason"] == f"connector {connector} reports its upstream degraded"
        await publish(js, heartbeat(system, connector, "down"))
        down = await eventually(lambda: with_status(api, headers, system, "down"))
        assert down["reason"] == "every connector reports its upstream down"
        await publish(js, heartbeat(system, connector, "up"))
        await eventually(lambda: with_status(api, headers, system, "up", "heartbeats on time"))
    finally:
        await pool.execute("DELETE FROM heartbeats WHERE connector = $1", connector)


async def test_a_heartbeat_from_a_clock_running_ahead_does_not_outrank_the_ones_after_it(
        api, js, pool: asyncpg.Pool, token, uid):
    """Found in review: its key stayed ahead, so every later heartbeat (dated right) was dropped as older,
    and the system read down until real time caught up with the one from the clock running ahead."""
    system, connector = "lab_clock", f"lab-clock-{uid}"
    headers = {"Authorization": f"Bearer {token('sre', '*')}"}
    try:
        await publish(js, heartbeat(system, connector, "down", age=-timedelta(seconds=240)))
        await eventually(lambda: with_status(api, headers, system, "down"))
        await publish(js, heartbeat(system, connector, "up"))
        await eventually(lambda: with_status(api, headers, system, "up", "heartbeats on time"))
    finally:
        await pool.execute("DELETE FROM heartbeats WHERE connector = $1", connector)


async def test_capacity_from_a_clock_running_ahead_does_not_outrank_the_reports_after_it(api, js, token, uid):
    site = f"cap-clock-{uid}"
    reader = {"Authorization": f"Bearer {token('manager', [site])}"}
    report = {"site": site, "counters_open": 4, "counters_busy": 1, "staff_on_duty": 5}
    ahead = datetime.now(UTC) + timedelta(seconds=240)
    await publish(js, cloud_event("capacity.changed", f"site:{site}", {**report, "queue_length": 9},
                                  source="/queue", time=ahead))

    async def queue_length(expected: int) -> bool:
        items = (await api.get("/api/v1/capacity", params={"site": site}, headers=reader)).json()["items"]
        return bool(items) and items[0]["queue_length"] == expected

    await eventually(lambda: queue_length(9))
    await publish(js, cloud_event("capacity.changed", f"site:{site}", {**report, "queue_length": 2},
                                  source="/queue"))
    await eventually(lambda: queue_length(2))


async def test_integration_figures_reflect_real_traffic(api, js, token, uid):
    system, site = "lab_traffic", f"site-{uid}"
    headers = {"Authorization": f"Bearer {token('manager', [site])}"}
    before = await integration(api, headers, system)
    assert before is not None
    happened = datetime.now(UTC) - timedelta(minutes=1)  # a minute before the connector sent them
    for n in range(30):
        await publish(js, cloud_event("customer.arrived", f"{system}:V-{uid}-{n}", {"site": site},
                                      time=happened))
    for n in range(3):  # personal data: refused, counted as invalid
        await publish(js, cloud_event("customer.arrived", f"{system}:P-{uid}-{n}",
                                      {"site": site, "email": "a@b.example"}))

    async def counted():
        item = await integration(api, headers, system)
        assert item is not None
        grown = item["events_per_min"] - before["events_per_min"] >= 30 / 5
        return item if grown and item["invalid_per_min"] - before["invalid_per_min"] >= 3 / 5 else None

    item = await eventually(counted)
    assert item["events_per_min"] - before["events_per_min"] == pytest.approx(30 / 5)
    assert item["invalid_per_min"] - before["invalid_per_min"] == pytest.approx(3 / 5)
    # a minute and the apply's moment, read from the minute's histogram: within its buckets' 25%
    assert 60_000 / 1.25 <= item["apply_latency_p50_ms"] <= item["apply_latency_p99_ms"] <= 70_000 * 1.25
    assert (item["held_commands"], item["command_success_rate"]) == (0, None)
    page = (await api.get("/api/v1/integrations", headers=headers)).json()
    assert isinstance(page["consumer_lag"], int) and page["consumer_lag"] >= 0
    connector = {"Authorization": f"Bearer {token('connector', '*', system)}"}
    assert (await api.get("/api/v1/integrations", headers=connector)).status_code == 403


async def _outbox(pool: asyncpg.Pool, system: str, site: str, command: str, n: int) -> list[uuid.UUID]:
    """Commands written to the outbox as a bulk repair writes them; their creation order is their order."""
    ids = [uuid.uuid4() for _ in range(n)]
    for command_id in ids:
        await pool.execute(
            "INSERT INTO commands (id, rule, system, command, journey_id, site, data, refs)"
            " VALUES ($1, 'repair', $2, $3, $4, $5, '{}'::jsonb, $6)",
            command_id, system, command, uuid.uuid4(), site, [f"{system}:R-{command_id.hex[:8]}"])
    return ids


async def _statuses(pool: asyncpg.Pool, ids: list[uuid.UUID]) -> list[str]:
    rows = await pool.fetch("SELECT status FROM commands WHERE id = ANY($1::uuid[])", ids)
    return [r["status"] for r in rows]


async def test_held_commands_leave_in_order_at_the_paced_rate_and_errors_slow_them_further(
        api, js, nc, pool: asyncpg.Pool, token, uid):
    system, site, connector = "lab_pace", f"site-{uid}", f"lab-pace-{uid}"
    headers = {"Authorization": f"Bearer {token('sre', '*')}"}
    answer = {"now": "ok"}
    arrivals: list[tuple[str, float]] = []

    def record(command) -> str:
        arrivals.append((command.id, time.monotonic()))
        return answer["now"]

    try:
        async with ConnectorDouble(nc, system, site, record):
            await publish(js, heartbeat(system, connector, "up", age=timedelta(minutes=5)))
            await eventually(lambda: with_status(api, headers, system, "down"))
            held = await _outbox(pool, system, site, "record.push", 8)
            await eventually(lambda: _all(pool, held, "held"))
            assert arrivals == []
            paused = await integration(api, headers, system)
            assert paused is not None
            assert paused["held_commands"] == 8
            assert paused["pace"]["reason"] == "held: the system is down"

            await publish(js, heartbeat(system, connector, "up"))
            await eventually(lambda: _all(pool, held, "ok"))
            assert [a for a, _ in arrivals] == [str(i) for i in held]  # in order
            gaps = [b - a for (_, a), (_, b) in itertools.pairwise(arrivals)]
            # restarting at 60/min (+10/min each second): about one a second, never all at once
            assert arrivals[-1][1] - arrivals[0][1] >= 3.5, gaps
            assert min(gaps) >= 0.3, gaps
            recovering = await integration(api, headers, system)
            assert recovering is not None
            assert recovering["pace"]["reason"] == "recovering: back after an outage"
            assert recovering["pace"]["recovering"] and recovering["command_success_rate"] == 1.0
            rate_before = recovering["pace"]["rate_per_min"]
            assert 60 <= rate_before < 6000

            answer["now"] = "failed"
            failing = await _outbox(pool, system, site, "record.push", 1)
            slowed = await eventually(lambda: _pace_reason_has(api, headers, system, "failed answer"))
            assert slowed["pace"]["rate_per_min"] < rate_before * 0.75
            await eventually(lambda: _all(pool, failing, "failed"))
            final = await integration(api, headers, system)
            assert final is not None
            assert final["command_success_rate"] == pytest.approx(8 / 9)
    finally:
        await pool.execute("DELETE FROM heartbeats WHERE connector = $1", connector)


async def _all(pool, ids, status):
    return all(s == status for s in await _statuses(pool, ids))


async def _pace_reason_has(api, headers, system, text):
    item = await integration(api, headers, system)
    assert item is not None
    return item if item["pace"] and text in item["pace"]["reason"] else None


async def test_staff_commands_while_recovering_are_bounded_by_the_open_counters_shown_to_their_sites_only(
        api, backend, js, nc, pool: asyncpg.Pool, token, uid):
    system, site, connector = "lab_floor", f"site-{uid}", f"lab-floor-{uid}"
    headers = {"Authorization": f"Bearer {token('sre', '*')}"}
    await publish(js, cloud_event("capacity.changed", f"site:{site}", {
        "site": site, "counters_open": 1, "counters_busy": 1, "staff_on_duty": 1, "queue_length": 9},
        source="/queue"))
    await eventually(lambda: pool.fetchval("SELECT 1 FROM capacity WHERE site = $1", site))
    try:
        async with ConnectorDouble(nc, system, site, lambda _: "ok") as floor:
            await publish(js, heartbeat(system, connector, "up", age=timedelta(minutes=5)))
            await eventually(lambda: with_status(api, headers, system, "down"))
            alerts = await _outbox(pool, system, site, "staff.alert", 4)
            await eventually(lambda: _all(pool, alerts, "held"))
            await publish(js, heartbeat(system, connector, "up"))
            bounded = await eventually(lambda: _pace_reason_has(api, headers, system, "floor"))
            assert bounded["pace"]["floor"] == {site: 1}
            assert bounded["pace"]["reason"].endswith("floor: open counters limit staff commands at 1 site")
            own = await integration(api, {"Authorization": f"Bearer {token('manager', [site])}"}, system)
            assert own is not None and own["pace"]["floor"] == {site: 1}
            # a manager of another site learns nothing of this one
            elsewhere = token("manager", [f"other-{uid}"])
            seen = await integration(api, {"Authorization": f"Bearer {elsewhere}"}, system)
            assert seen is not None and seen["pace"]["floor"] == {} and site not in seen["pace"]["reason"]
            async with connect(backend, elsewhere) as ws:
                [live] = [i for i in (await subscribe(ws, ["integrations"]))["integrations"]["data"]
                          if i["system"] == system]
            assert live["pace"]["floor"] is None and site not in live["pace"]["reason"]
            # two per open counter per minute: the first two go, the others wait for the floor
            assert [c.id for c in floor.received] == [str(i) for i in alerts[:2]]
            assert sorted(await _statuses(pool, alerts[2:])) == ["held", "held"]
    finally:
        await pool.execute("DELETE FROM heartbeats WHERE connector = $1", connector)
        await pool.execute("DELETE FROM commands WHERE site = $1 AND status IN ('pending', 'held')", site)
