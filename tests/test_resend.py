"""The commands console's API: each command's attempts, and `POST /api/v1/commands/<id>/resend` (sre,
audited, exactly once) on a backend of the test's own with a real connector double over NATS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support.backends import Stack, own_stack
from tests.support.connector_double import ConnectorDouble
from tests.support.events import phone_booking, publish
from tests.support.waits import eventually


@pytest.fixture
async def stack(server_urls: dict[str, str], workdir: Path) -> AsyncIterator[Stack]:
    async with own_stack(server_urls["database_url"], workdir) as stack:
        yield stack


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.backend.url, timeout=10) as client:
        yield client


def auth(token, role, sites):
    return {"Authorization": f"Bearer {token(role, sites)}"}


async def _command(api, headers, site, status):
    response = await api.get("/api/v1/commands", params={"site": site, "status": status}, headers=headers)
    items = response.json()["items"]
    return items[0] if items else None


async def test_resend_of_a_failed_command_sends_it_once_more_and_is_audited(api, stack, token, uid):
    site = f"resend-{uid}"
    reader, sre = auth(token, "manager", [site]), auth(token, "sre", [site])
    answer = {"now": "failed"}
    async with ConnectorDouble(stack.nc, "queue", site, lambda _: answer["now"]) as queue:
        await publish(stack.nc.jetstream(), phone_booking(f"appointments:R-{uid}", site))
        command = await eventually(lambda: _command(api, reader, site, "failed"))
        history = command["attempt_history"]
        assert [(a["attempt"], a["answer"], a["error"]) for a in history] == [
            (n, "failed", "upstream said no") for n in (1, 2, 3)]
        assert all(a["answered_at"] >= a["sent_at"] for a in history) and command["resendable"]
        path = f"/api/v1/commands/{command['id']}/resend"

        # who may: sre (and admin) of the command's site only; refusals change nothing
        for headers in (reader, auth(token, "floor_staff", [site]), auth(token, "sre", ["elsewhere"])):
            assert (await api.post(path, json={}, headers=headers)).status_code == 403
        resends = await stack.pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'command.resend'")
        assert resends == 0

        answer["now"] = "ok"  # the cause is fixed upstream; two SREs press resend at once
        first, second = await asyncio.gather(api.post(path, json={"reason": "fixed"}, headers=sre),
                                             api.post(path, json={"reason": "fixed too"}, headers=sre))
        assert sorted([first.status_code, second.status_code]) == [200, 409], [first.text, second.text]
        refused = first if first.status_code == 409 else second
        winner_reason = "fixed" if first.status_code == 200 else "fixed too"  # whichever came first
        assert refused.headers["content-type"].startswith("application/problem+json")
        settled = await eventually(lambda: _command(api, reader, site, "ok"))
        assert settled["attempts"] == 4 and settled["attempt_history"][-1]["answer"] == "ok"
        assert [c.attempt for c in queue.received] == [1, 2, 3, 4]  # sent again exactly once
        # a later command to the same system and site: once it is here, a second resend would be too
        await publish(stack.nc.jetstream(), phone_booking(f"appointments:S-{uid}", site))

        async def later_one_received() -> bool:
            return any(c.id != queue.received[0].id for c in queue.received)

        await eventually(later_one_received)
        assert [c.attempt for c in queue.received if c.id == queue.received[0].id] == [1, 2, 3, 4]
    failure = (await api.get("/api/v1/failures", params={"site": site}, headers=reader)).json()["items"][0]
    assert failure["status"] == "resolved"
    [audited] = await stack.pool.fetch("SELECT * FROM audit_log WHERE action = 'command.resend'")
    assert (audited["target"], audited["site"], audited["reason"]) == (f"command:{command['id']}", site,
                                                                       winner_reason)
    # settled ok: nothing to send again
    again = await api.post(path, json={}, headers=sre)
    assert again.status_code == 409 and "ok" in again.json()["title"]
    assert (await api.post("/api/v1/commands/00000000-0000-0000-0000-000000000000/resend", json={},
                           headers=sre)).status_code == 404


async def test_resend_is_refused_for_a_command_still_in_flight(api, stack, token, uid):
    site = f"resend-wait-{uid}"
    reader, sre = auth(token, "manager", [site]), auth(token, "sre", [site])
    async with ConnectorDouble(stack.nc, "queue", site, lambda _: None):  # never answers
        await publish(stack.nc.jetstream(), phone_booking(f"appointments:S-{uid}", site))
        command = await eventually(lambda: _command(api, reader, site, "sent"))
        assert not command["resendable"] and command["attempt_history"][0]["answer"] is None
        response = await api.post(f"/api/v1/commands/{command['id']}/resend", json={}, headers=sre)
        assert response.status_code == 409 and "sent" in response.json()["title"]
        single = await api.get(f"/api/v1/commands/{command['id']}", headers=reader)
        assert single.json()["status"] == "sent"
        assert (await api.get(f"/api/v1/commands/{command['id']}",
                              headers=auth(token, "manager", ["elsewhere"]))).status_code == 403
