"""Inbound Standard Webhooks: verified, replay- and staleness-proof, mapped to canonical events."""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import msgspec
import pytest
from standardwebhooks.webhooks import Webhook

from tests.support.backends import start_backend
from tests.support.events import cloud_event
from tests.support.waits import eventually
from tools.backend_process import BackendProcess

SECRET = "whsec_" + base64.b64encode(b"fake-inbound-webhook-secret-32by").decode()


@pytest.fixture(scope="module")
def webhook_backend(settings, workdir) -> Iterator[BackendProcess]:
    """A backend that shares a webhook secret with the `queue` system."""
    process = start_backend(settings, workdir / "webhook-backend.log",
                            {"SWITCHBOARD_WEBHOOK_SECRETS": f"queue={SECRET}"})
    yield process
    process.stop()


def signed(body: bytes, *, webhook_id: str | None = None, at: datetime | None = None,
           secret: str = SECRET) -> dict[str, str]:
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    at = at or datetime.now(UTC)
    return {"webhook-id": webhook_id, "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": Webhook(secret).sign(webhook_id, at, body.decode()),
            "content-type": "application/json"}


def ticket_called(ref: str, site: str) -> bytes:
    return httpx.Request("POST", "/", json={
        "type": "ticket.called", "timestamp": datetime.now(UTC).isoformat(),
        "data": {"ref": ref, "site": site, "counter": "C2"}}).content


async def test_a_signed_webhook_becomes_a_journey_event_and_a_replay_is_refused(webhook_backend, token, uid):
    site = f"wh-{uid}"
    body = ticket_called(f"T-{uid}", site)
    headers = signed(body)
    async with httpx.AsyncClient(base_url=webhook_backend.url) as client:
        response = await client.post("/api/v1/webhooks/queue", content=body, headers=headers)
        assert response.status_code == 202, response.text
        assert response.json() == {"source": "/queue", "id": headers["webhook-id"]}

        replay = await client.post("/api/v1/webhooks/queue", content=body, headers=headers)
        assert replay.status_code == 409

        auth = {"Authorization": f"Bearer {token('manager', [site])}"}

        async def journey():
            items = (await client.get("/api/v1/journeys", params={"ref": f"queue:T-{uid}"},
                                      headers=auth)).json()
            return items["items"]

        [found] = await eventually(journey)
        assert (found["stage"], found["counter"], found["site"]) == ("called", "C2", site)


async def test_a_cloudevent_body_with_a_webhook_id_too_long_to_index_is_applied_and_its_replay_refused(
        webhook_backend, token, uid):
    """The body keeps its own event id; the webhook-id only keys the replay receipt (it was a 500: an index
    entry of 6,000 bytes)."""
    site = f"wh-{uid}"
    body = msgspec.json.encode(cloud_event("customer.arrived", f"queue:L-{uid}", {"site": site},
                                           source="/queue", id=f"long-{uid}"))
    headers = signed(body, webhook_id=f"msg_{secrets.token_urlsafe(4500)}")  # random: no compression saves it
    async with httpx.AsyncClient(base_url=webhook_backend.url) as client:
        response = await client.post("/api/v1/webhooks/queue", content=body, headers=headers)
        assert response.status_code == 202, response.text
        assert response.json() == {"source": "/queue", "id": f"long-{uid}"}
        assert (await client.post("/api/v1/webhooks/queue", content=body, headers=headers)).status_code == 409
        auth = {"Authorization": f"Bearer {token('manager', [site])}"}

        async def journey():
            return (await client.get("/api/v1/journeys", params={"ref": f"queue:L-{uid}"},
                                     headers=auth)).json()["items"]

        [found] = await eventually(journey)
        assert found["stage"] == "arrived"


async def test_a_webhook_id_is_kept_only_as_its_digest(webhook_backend, pool, uid):
    """The sender chooses the webhook-id, an e-mail address too: the replay receipt keeps its digest, and a
    replay is still refused."""
    body = msgspec.json.encode(cloud_event("customer.arrived", f"queue:E-{uid}", {"site": f"wh-{uid}"},
                                           source="/queue", id=f"mail-{uid}"))
    headers = signed(body, webhook_id=f"jane.doe.{uid}@example.com")
    async with httpx.AsyncClient(base_url=webhook_backend.url) as client:
        assert (await client.post("/api/v1/webhooks/queue", content=body, headers=headers)).status_code == 202
        assert (await client.post("/api/v1/webhooks/queue", content=body, headers=headers)).status_code == 409
    assert await pool.fetchval("SELECT count(*) FROM webhook_receipts WHERE webhook_id LIKE $1",
                               f"%{uid}%") == 0


async def test_bad_signatures_stale_timestamps_and_unknown_systems_are_refused(webhook_backend, uid):
    body = ticket_called(f"T-{uid}", f"wh-{uid}")
    async with httpx.AsyncClient(base_url=webhook_backend.url) as client:
        other_secret = "whsec_" + base64.b64encode(b"fake-and-not-the-shared-secret!!").decode()
        wrong = await client.post("/api/v1/webhooks/queue", content=body,
                                  headers=signed(body, secret=other_secret))
        stale = await client.post("/api/v1/webhooks/queue", content=body,
                                  headers=signed(body, at=datetime.now(UTC) - timedelta(minutes=10)))
        tampered = await client.post("/api/v1/webhooks/queue", content=body.replace(b"C2", b"C9"),
                                     headers=signed(body))
        unsigned = await client.post("/api/v1/webhooks/queue", content=body,
                                     headers={"content-type": "application/json"})
        no_secret = await client.post("/api/v1/webhooks/crm", content=body, headers=signed(body))
        not_text = await client.post("/api/v1/webhooks/queue", content=body.replace(b"C2", b"C\xff"),
                                     headers=signed(body))
    assert [r.status_code for r in (wrong, stale, tampered, unsigned)] == [401] * 4
    assert "too old" in stale.text
    # said for what it is, not as a bad signature (found in review)
    assert not_text.status_code == 400 and "not valid UTF-8" in not_text.text
    assert no_secret.status_code == 404


async def test_a_webhook_that_maps_to_no_valid_event_is_a_recorded_failure(webhook_backend, token, uid):
    site = f"wh-{uid}"
    bodies = {
        "invalid_event": httpx.Request("POST", "/", json={
            "type": "ticket.called", "timestamp": datetime.now(UTC).isoformat(),
            "data": {"ref": f"T-{uid}", "site": site}}).content,  # no counter
        "pii_rejected": httpx.Request("POST", "/", json={
            "type": "customer.arrived", "timestamp": datetime.now(UTC).isoformat(),
            "data": {"ref": f"T-{uid}-p", "site": site, "email": "someone@example.org"}}).content,
        "unauthorized_source": httpx.Request("POST", "/", json={
            "specversion": "1.0", "id": f"x-{uid}", "source": "/crm", "type": "customer.priority_changed",
            "subject": f"crm:C-{uid}", "time": datetime.now(UTC).isoformat(),
            "data": {"site": site, "priority": "high"}}).content,  # the queue's secret may not speak for crm
    }
    async with httpx.AsyncClient(base_url=webhook_backend.url) as client:
        for kind, body in bodies.items():
            response = await client.post("/api/v1/webhooks/queue", content=body, headers=signed(body))
            assert response.status_code == 422 and kind in response.text, response.text
        sre = {"Authorization": f"Bearer {token('sre')}"}
        failures = (await client.get("/api/v1/failures", params={"site": site}, headers=sre)).json()["items"]
    kinds = sorted(f["kind"] for f in failures if f["site"] == site)
    assert kinds == sorted(bodies)
    assert "someone@example.org" not in str(failures)  # stored redacted


async def test_a_webhook_nested_past_any_depth_or_with_an_id_no_key_holds_is_a_failure_of_its_own(
        webhook_backend, pool, uid):
    nested = b'{"type": "' + uid.encode() + b'", "data": ' + b'{"data": ' * 1000 + b"1" + b"}" * 1001
    # ids of 600 characters sharing their first 590, and an id that is an e-mail address
    long_ids = [f"msg_{uid}_{'x' * 560}{n:020d}" for n in (1, 2)]
    personal_id = f"someone.{uid}@example.org"
    body = ticket_called(f"T-{uid}", f"wh-{uid}")
    async with httpx.AsyncClient(base_url=webhook_backend.url) as client:
        deep = await client.post("/api/v1/webhooks/queue", content=nested, headers=signed(nested))
        assert deep.status_code == 422 and "invalid_event" in deep.text, deep.text  # was a 500, not recorded
        for webhook_id in [*long_ids, personal_id]:
            refused = await client.post("/api/v1/webhooks/queue", content=body,
                                        headers=signed(body, webhook_id=webhook_id))
            assert refused.status_code == 422, refused.text
    assert await pool.fetchval("SELECT count(*) FROM failures WHERE payload->>'excerpt' LIKE $1",
                               f"%{uid}%") == 1
    for webhook_id in long_ids:  # two deliveries, two failures
        assert await pool.fetchval("SELECT count(*) FROM failures WHERE payload::text LIKE $1"
                                   " AND payload::text LIKE $2", f"%msg_{uid}_%",
                                   f"%{webhook_id[-20:]}%") == 1
    assert await pool.fetchval("SELECT count(*) FROM failures f WHERE strpos(row_to_json(f)::text, $1) > 0",
                               personal_id) == 0


def _flip(signature: str) -> str:
    version, _, value = signature.partition(",")
    raw = bytearray(base64.b64decode(value))
    raw[0] ^= 1
    return f"{version},{base64.b64encode(bytes(raw)).decode()}"


# each: a mutation of a correctly signed request; every one must be refused and change nothing
MUTATIONS = {
    "one bit of the signature": lambda h, b: ({**h, "webhook-signature": _flip(h["webhook-signature"])}, b),
    "another scheme version":
        lambda h, b: ({**h, "webhook-signature": h["webhook-signature"].replace("v1,", "v2,")}, b),
    "empty signature": lambda h, b: ({**h, "webhook-signature": ""}, b),
    "only wrong signatures":
        lambda h, b: ({**h, "webhook-signature": f"v1,{'A' * 44} {_flip(h['webhook-signature'])}"}, b),
    "another webhook-id": lambda h, b: ({**h, "webhook-id": h["webhook-id"] + "x"}, b),
    "timestamp moved by a second":
        lambda h, b: ({**h, "webhook-timestamp": str(int(h["webhook-timestamp"]) + 1)}, b),
    "timestamp not a number": lambda h, b: ({**h, "webhook-timestamp": "soon"}, b),
    "body with a trailing space": lambda h, b: (h, b + b" "),
    "no webhook-id": lambda h, b: ({k: v for k, v in h.items() if k != "webhook-id"}, b),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
async def test_every_mutation_of_a_signed_webhook_is_refused(webhook_backend, pool, uid, mutation):
    body = ticket_called(f"T-{uid}", f"wh-{uid}")
    headers, sent = MUTATIONS[mutation](signed(body), body)
    async with httpx.AsyncClient(base_url=webhook_backend.url) as client:
        response = await client.post("/api/v1/webhooks/queue", content=sent, headers=headers)
    assert response.status_code == 401, response.text
    assert await pool.fetchval("SELECT count(*) FROM webhook_receipts WHERE webhook_id LIKE $1",
                               headers.get("webhook-id", "none") + "%") == 0


async def test_a_future_timestamp_is_refused_and_one_valid_signature_among_several_is_enough(webhook_backend,
                                                                                              uid):
    body = ticket_called(f"T-{uid}", f"wh-{uid}")
    future = signed(body, at=datetime.now(UTC) + timedelta(minutes=10))
    rotated = signed(body)  # a sender rotating its secret sends the old and the new signature
    rotated["webhook-signature"] = f"{_flip(rotated['webhook-signature'])} {rotated['webhook-signature']}"
    async with httpx.AsyncClient(base_url=webhook_backend.url) as client:
        assert (await client.post("/api/v1/webhooks/queue", content=body, headers=future)).status_code == 401
        assert (await client.post("/api/v1/webhooks/queue", content=body, headers=rotated)).status_code == 202
        # the same id again, even re-signed with a fresh timestamp, is a replay
        again = signed(body, webhook_id=rotated["webhook-id"])
        assert (await client.post("/api/v1/webhooks/queue", content=body, headers=again)).status_code == 409


@pytest.mark.parametrize(("secret", "reason"), [("whsec_!!!", "not a Standard Webhooks key"),
                                               ("whsec_dGVzdA==", "a key of 4 bytes")])
def test_a_backend_with_an_unusable_inbound_webhook_secret_refuses_to_start(settings, workdir, secret,
                                                                            reason):
    # a malformed secret refused every webhook of its system, a short one signatures anyone could forge
    with pytest.raises(RuntimeError, match=rf"SWITCHBOARD_WEBHOOK_SECRETS \(queue\) is {reason}"):
        start_backend(settings, workdir / f"backend-badsecret-{uuid.uuid4().hex[:8]}.log",
                      {"SWITCHBOARD_WEBHOOK_SECRETS": f"queue={secret}"}).stop()  # stopped, had it started
