"""Identity edges (issue 13, CONTRACT section 7): the public ingest routes are rate limited, per connector
system and per client, without touching any other route; the dashboard's pages refuse to be framed and
its session cookie is `Secure` behind HTTPS. On a real backend (Postgres, NATS) and a real dashboard process.
(Roles and token lifetimes: tests/test_auth.py; the identity provider's keys: tests/test_jwks.py.)"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from backend.settings import BackendSettings
from tests.support.backends import start_backend
from tests.support.browser import running_dashboard
from tests.support.events import cloud_event
from tests.support.waits import eventually
from tools.backend_process import BackendProcess

RATE = 3
SECRET = "whsec_" + base64.b64encode(b"fake-webhook-secret-for-the-test").decode()


@pytest.fixture(scope="module")
def limited_backend(settings: BackendSettings, workdir: Path) -> Iterator[BackendProcess]:
    process = start_backend(
        settings,
        workdir / "limited-backend.log",
        {
            "SWITCHBOARD_INGEST_RATE_PER_S": str(RATE),
            "SWITCHBOARD_WEBHOOK_RATE_PER_S": str(RATE),
            "SWITCHBOARD_WEBHOOK_SECRETS": f"queue={SECRET}",
        },
    )
    yield process
    process.stop()


async def burst(send, n: int) -> tuple[list[httpx.Response], int]:
    """The answers to `n` requests sent at once, and how many wall-clock seconds the burst touched: the
    limiter's window ends at the next whole second, so a burst across one meets two windows."""
    started = time.time()
    responses = await asyncio.gather(*(send(i) for i in range(n)))
    return list(responses), int(time.time()) - int(started) + 1


def within_limit(responses: list[httpx.Response], windows: int, ok: int) -> None:
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {ok, 429}, statuses
    # RATE per window: a burst within one whole second admits exactly RATE, one across a second 2 × RATE
    assert RATE <= statuses.count(ok) <= RATE * windows, (statuses, windows)
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["status"] == 429 and "ratelimit-reset" in refused.headers


async def test_event_ingest_is_limited_per_connector_system_and_nothing_refused_is_applied(
    limited_backend, token, pool, uid
):
    queue = {"Authorization": f"Bearer {token('connector', system='queue')}"}
    crm = {"Authorization": f"Bearer {token('connector', system='crm')}"}
    reader = {"Authorization": f"Bearer {token('manager')}"}
    events = [
        cloud_event("customer.arrived", f"queue:RL-{uid}-{i}", {"site": f"rl-{uid}"}) for i in range(10)
    ]
    async with httpx.AsyncClient(base_url=limited_backend.url, timeout=10) as client:
        responses, windows = await burst(
            lambda i: client.post("/api/v1/events", json=events[i], headers=queue), 10
        )
        within_limit(responses, windows, 202)
        # another system's connector has a budget of its own, and reading is not limited at all
        assert (
            await client.post(
                "/api/v1/events",
                json=cloud_event("customer.arrived", f"crm:RL-{uid}", {"site": f"rl-{uid}"}, source="/crm"),
                headers=crm,
            )
        ).status_code == 202
        reads, _ = await burst(lambda _: client.get("/api/v1/flow", headers=reader), 10)
        assert [r.status_code for r in reads] == [200] * 10

        accepted = [e["id"] for e, r in zip(events, responses, strict=True) if r.status_code == 202]
        refused = [e["id"] for e, r in zip(events, responses, strict=True) if r.status_code == 429]

        async def all_accepted_applied() -> bool:
            return await pool.fetchval(
                "SELECT count(*) FROM events WHERE id = ANY($1::text[])", accepted
            ) == len(accepted)

        await eventually(all_accepted_applied)
        # a 429 is the sender's to resend: nothing of it was published, applied or recorded
        assert (
            await pool.fetchval("SELECT count(*) FROM event_inbox WHERE id = ANY($1::text[])", refused) == 0
        )
        assert (
            await pool.fetchval("SELECT count(*) FROM failures WHERE event_id = ANY($1::text[])", refused)
            == 0
        )

        await asyncio.sleep(1.1)  # a new second, a new budget
        again = cloud_event("customer.arrived", f"queue:RL-{uid}-again", {"site": f"rl-{uid}"})
        assert (await client.post("/api/v1/events", json=again, headers=queue)).status_code == 202


async def test_webhooks_are_limited_per_client_before_any_work(limited_backend, pool, uid):
    async with httpx.AsyncClient(base_url=limited_backend.url, timeout=10) as client:
        # unsigned: each costs a signature check (401) until the client's budget is spent, then not even that
        responses, windows = await burst(
            lambda i: client.post(
                "/api/v1/webhooks/queue", content=b"{}", headers={"webhook-id": f"rl-{uid}-{i}"}
            ),
            10,
        )
        within_limit(responses, windows, 401)
        assert await pool.fetchval("SELECT count(*) FROM webhook_receipts WHERE webhook_id LIKE $1",
                                   f"rl-{uid}-%") == 0
        assert (await client.get("/health")).status_code == 200


@pytest.fixture(scope="module")
def dashboard_url(backend: BackendProcess, settings: BackendSettings, workdir: Path) -> Iterator[str]:
    """A real `switchboard dashboard` process, started as the browser tests start it (not in demo mode)."""
    with running_dashboard(backend, settings, workdir / "dashboard-headers.log", demo=False) as url:
        yield url


@pytest.mark.parametrize("path", ["/signin", "/", "/failures"])
def test_dashboard_pages_refuse_to_be_framed(dashboard_url, path):
    response = httpx.get(dashboard_url + path, follow_redirects=False, timeout=10)
    assert response.status_code in (200, 303), response.status_code  # 303: to the sign-in page
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["content-security-policy"] == "frame-ancestors 'none'"


def test_the_session_cookie_is_secure_behind_https_only(dashboard_url):
    plain = httpx.get(dashboard_url + "/signin", timeout=10).headers.get_list("set-cookie")
    # the test talks from loopback, which uvicorn trusts as a proxy by default (FORWARDED_ALLOW_IPS)
    proxied = httpx.get(
        dashboard_url + "/signin", headers={"X-Forwarded-Proto": "https"}, timeout=10
    ).headers.get_list("set-cookie")
    assert plain and proxied, "a first visit gets a session cookie"
    assert not any("secure" in c.lower() for c in plain), plain
    assert all("; secure" in c.lower() and "httponly" in c.lower() for c in proxied), proxied
