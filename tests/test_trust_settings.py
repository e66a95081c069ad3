"""Every way in judges an event by the same trust settings (`SWITCHBOARD_MAX_FUTURE_S`,
`SWITCHBOARD_ACTS_FOR`): HTTP ingest and inbound webhooks as the NATS consumer does. Before, the HTTP routes
judged by the defaults whatever was configured, and refused for good what NATS applied."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.support.backends import start_backend
from tests.support.events import cloud_event
from tests.test_webhooks_inbound import SECRET, signed
from tools.backend_process import BackendProcess

LATER = timedelta(minutes=30)  # beyond the default 300 s, within the 3600 s configured here


@pytest.fixture(scope="module")
def trusting_backend(settings, workdir) -> Iterator[BackendProcess]:
    process = start_backend(settings, workdir / "trusting-backend.log", {
        "SWITCHBOARD_MAX_FUTURE_S": "3600",
        "SWITCHBOARD_ACTS_FOR": "contact_center=appointments,crm=queue",
        "SWITCHBOARD_WEBHOOK_SECRETS": f"queue={SECRET}",
    })
    yield process
    process.stop()


def _connector(token, system: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token('connector', system=system)}"}


async def test_http_ingest_judges_by_the_configured_trust(trusting_backend, api, token, uid):
    site = f"trust-{uid}"
    ahead = cloud_event("ticket.called", f"queue:T-{uid}", {"site": site, "counter": "C1"},
                        time=datetime.now(UTC) + LATER)
    for_queue = cloud_event("customer.priority_changed", f"queue:U-{uid}", {"site": site, "priority": "high"},
                            source="/crm")
    async with httpx.AsyncClient(base_url=trusting_backend.url, timeout=10) as client:
        dated = await client.post("/api/v1/events", json=ahead, headers=_connector(token, "queue"))
        acting = await client.post("/api/v1/events", json=for_queue, headers=_connector(token, "crm"))
    assert (dated.status_code, dated.json()["rejected"]) == (202, []), dated.text
    assert (acting.status_code, acting.json()["rejected"]) == (202, []), acting.text
    # the session's backend keeps the defaults: the same events are refused there
    ahead["id"], for_queue["id"] = f"{ahead['id']}-default", f"{for_queue['id']}-default"
    refused = [(await api.post("/api/v1/events", json=event, headers=_connector(token, system))).json()
               for event, system in ((ahead, "queue"), (for_queue, "crm"))]
    assert [r["rejected"][0]["kind"] for r in refused] == ["invalid_event", "unauthorized_source"], refused


async def test_a_webhook_is_judged_by_the_configured_trust(trusting_backend, uid):
    body = httpx.Request("POST", "/", json={
        "type": "ticket.called", "timestamp": (datetime.now(UTC) + LATER).isoformat(),
        "data": {"ref": f"T-{uid}", "site": f"trust-{uid}", "counter": "C2"}}).content
    async with httpx.AsyncClient(base_url=trusting_backend.url, timeout=10) as client:
        response = await client.post("/api/v1/webhooks/queue", content=body, headers=signed(body))
    assert response.status_code == 202, response.text
