"""The live bus (backend/live/bus.py): one way every domain announces, failures included, and only what
commits. Real NATS, real Postgres, real websockets on real replicas."""

from __future__ import annotations

import httpx
import pytest

from backend.failures.services import failure_changed
from backend.live.bus import LiveBus
from tests.support.backends import nats_connect, own_stack
from tests.support.connector_double import ConnectorDouble
from tests.support.events import cloud_event, phone_booking, publish
from tests.support.failures import bearer, one_failure
from tests.support.live import connect, is_update, receive_until, subscribe


class AbandonedError(Exception):
    """What makes a test's transaction roll back."""


async def _new_failure(conn, site: str, name: str) -> int:
    return await conn.fetchval("INSERT INTO failures (dedupe_key, kind, site, reason, payload)"
                               " VALUES ($1, 'invalid_event', $2, 'bus test', '{}') RETURNING id", name, site)


async def test_a_failure_changed_on_one_replica_reaches_another_s_client(api, second_backend, js, token, uid):
    site = f"site-{uid}"
    await publish(js, cloud_event("customer.arrived", f"fax:F-{uid}", {"site": site}))
    failure = await one_failure(api, bearer(token, "sre", [site]), site=site, kind="unauthorized_source")
    async with connect(second_backend, token("sre", [site])) as ws:
        [opened] = (await subscribe(ws, ["failures"]))["failures"]["data"]
        assert (opened["id"], opened["status"]) == (failure["id"], "open")
        # the discard commits on the first replica; the second hears of it only through the bus
        discarded = await api.post(f"/api/v1/failures/{failure['id']}/discard",
                                   headers=bearer(token, "sre", [site]), json={"reason": "retired system"})
        assert discarded.status_code == 200, discarded.text
        update, _ = await receive_until(ws, is_update("failures"))
    assert (update["site"], update["key"]) == (site, str(failure["id"]))
    assert update["data"]["status"] == "discarded"


async def test_only_a_committed_transaction_is_announced_and_once(backend, pool, settings, token, uid):
    site = f"site-{uid}"
    nc = await nats_connect(settings)
    bus = LiveBus(nc)
    try:
        async with connect(backend, token("sre", [site])) as ws:
            assert (await subscribe(ws, ["failures"]))["failures"]["data"] == []
            with pytest.raises(AbandonedError):
                async with pool.acquire() as conn, bus.after_commit(conn) as announce:
                    rolled_back = await _new_failure(conn, site, f"rolled-back-{uid}")
                    await failure_changed(conn, announce, [rolled_back])
                    raise AbandonedError
            async with pool.acquire() as conn, bus.after_commit(conn) as announce:
                committed = await _new_failure(conn, site, f"committed-{uid}")
                await failure_changed(conn, announce, [committed])
            async with pool.acquire() as conn, bus.after_commit(conn) as announce:
                marker = await _new_failure(conn, site, f"marker-{uid}")
                await failure_changed(conn, announce, [marker])
            # one connection publishes all three in order, so the marker comes after whatever came before it
            _, before = await receive_until(ws, is_update("failures", lambda f: f["key"] == str(marker)))
    finally:
        await nc.close()
    assert [(f["op"], f["key"], f["data"]["status"]) for f in before] == [("update", str(committed), "open")]
    assert await pool.fetchval("SELECT count(*) FROM failures WHERE id = $1", rolled_back) == 0


async def test_announcements_wait_for_the_outermost_transaction(pool, settings):
    nc = await nats_connect(settings)
    try:
        async with pool.acquire() as conn, conn.transaction():
            with pytest.raises(RuntimeError, match="outside any other"):
                async with LiveBus(nc).after_commit(conn):
                    pass  # a savepoint's end is no commit: nothing may be announced from here
    finally:
        await nc.close()


async def test_a_command_failure_is_announced_as_it_opens_is_resent_and_resolves(server_urls, workdir, token,
                                                                                 uid):
    """Three domains change one failure: the relay opens it, a resend retries it, the apply worker resolves it
    with the system's `ok`; the board hears each once, in order (the replica's own hub is handed them
    directly, and its bus's connection does not echo them back through NATS)."""
    site = f"cmd-{uid}"
    answer = {"now": "failed"}
    async with (own_stack(server_urls["database_url"], workdir) as stack,
                httpx.AsyncClient(base_url=stack.backend.url, timeout=10) as api,
                connect(stack.backend, token("sre", [site])) as ws,
                ConnectorDouble(stack.nc, "queue", site, lambda _: answer["now"])):
        await subscribe(ws, ["failures"])
        await publish(stack.nc.jetstream(), phone_booking(f"appointments:R-{uid}", site))
        opened, _ = await receive_until(ws, is_update("failures"))
        answer["now"] = "ok"
        resent = await api.post(f"/api/v1/commands/{opened['data']['command_id']}/resend", json={},
                                headers={"Authorization": f"Bearer {token('sre', [site])}"})
        assert resent.status_code == 200, resent.text
        resolved, between = await receive_until(
            ws, is_update("failures", lambda f: f["data"]["status"] == "resolved"))
    assert opened["data"]["status"] == "open" and opened["data"]["kind"] == "command_failed"
    assert [(f["op"], f["key"], f["data"]["status"]) for f in between] == [
        ("update", opened["key"], "retrying")]
    assert resolved["key"] == opened["key"]
