"""No personal data and no secrets at rest or in logs: after a run of hostile inputs carrying personal
data and tokens through every way in (NATS, HTTP ingest, the live websocket's `?token=`, refused
tokens, operators' free-text reasons on failures, fallbacks and drift, a connector's snapshot record),
neither any log file of the session nor any row of any table holds them. The backend for this run logs
at DEBUG, so even the most talkative level is checked. A token's `sub` that is not a safe code is kept
nowhere: it is pseudonymised, in the audit log too. Nor is any of it left in JetStream: a message refused
for personal data is erased from its stream once its failure is stored, and personal data in ids,
subjects, links, codes and errors is refused like personal fields."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import msgspec
import websockets
from nats.js.errors import NotFoundError
from websockets.typing import Origin

from backend.messaging import COMMANDS_STREAM, EVENTS_STREAM
from connectors.sim.system import Record
from switchboard.tokens import mint_token
from tests.support.backends import start_backend
from tests.support.events import cloud_event, publish
from tests.support.simulators import running, still_queue
from tests.support.waits import eventually


async def test_personal_data_and_tokens_reach_neither_logs_nor_tables(settings, workdir, pool, js, token, uid,
                                                                      tmp_path):
    email, phone, name = (f"ada.{uid}@example.org", f"+44 20 7946 {int(uid, 16) % 10_000:04d}",
                          f"Lovelace{uid}")
    live_token, expired = token("manager"), token("manager", ttl=timedelta(seconds=-10))
    connector = token("connector", system="queue")
    sre = token("sre")
    site = f"pii-{uid}"
    unsafe_sub = f"staff {uid} 0123456789"  # not a safe code: pseudonymised, in the audit log too
    digits, birth_id = f"0794{int(uid, 16) % 10_000_000:07d}", f"19800101-{int(uid, 16) % 10_000:04d}"
    person = f"Ada.Lovelace{uid.translate(str.maketrans('0123456789', 'abcdefghij'))}"
    sre_unsafe_sub = mint_token(settings.tokens, sub=unsafe_sub, roles=["sre"], sites=[site])
    secrets = [live_token, expired, connector, sre, sre_unsafe_sub]
    first_seq = await stream_ends(js)
    process = start_backend(settings, workdir / "backend-pii.log", {"SWITCHBOARD_LOG_LEVEL": "DEBUG"})
    try:
        async with httpx.AsyncClient(base_url=process.url, timeout=10) as api:
            await publish(js, cloud_event("customer.arrived", f"queue:A-{uid}",
                                          {"site": site, "email": email}))
            await publish(js, cloud_event("customer.arrived", f"queue:B-{uid}", {
                "site": site, "extra": {"contact": {"phone": phone}, "full_name": name}}))
            await js.publish("svc.events.queue.customer.arrived",
                             b'{"id": "' + uid.encode() + b'", "broken": "' + email.encode() + b'"')
            # personal data in the typed fields: ids, subjects, links, codes, a source's instance, a command's
            # error
            for event in personal_in_typed_fields(site, uid, digits, birth_id, person):
                await publish(js, event)
            batch = [cloud_event("customer.arrived", f"queue:C-{uid}",
                                 {"site": site, "note": f"{name} {phone}"}),
                     {"type": "customer.arrived", "email": email, "data": {"site": site}},
                     *personal_in_typed_fields(site, uid, digits, birth_id, person)]
            answer = await api.post("/api/v1/events", json=batch,
                                    headers={"Authorization": f"Bearer {connector}"})
            assert answer.status_code == 202 and len(answer.json()["rejected"]) == len(batch), answer.text
            assert answer.json()["accepted"] == []
            for bad in (expired, live_token + "x", f"{live_token}.{email}"):
                refused = await api.get("/api/v1/flow", headers={"Authorization": f"Bearer {bad}"})
                assert refused.status_code == 401
            ws_url = process.url.replace("http", "ws", 1) + f"/api/v1/live?token={live_token}"
            async with websockets.connect(ws_url, origin=Origin(process.url), open_timeout=10) as ws:
                subscribe = {"op": "subscribe", "topics": ["flow"], "sites": [email]}
                await ws.send(msgspec.json.encode(subscribe).decode())
                assert msgspec.json.decode(await ws.recv())["op"] == "error"

            sre_headers = {"Authorization": f"Bearer {sre}"}

            async def recorded() -> list[dict]:
                page = await api.get("/api/v1/failures", params={"site": site}, headers=sre_headers)
                items = page.json()["items"]
                return items if len(items) >= 3 else []

            failures = await eventually(recorded)
            discarded = await api.post(f"/api/v1/failures/{failures[0]['id']}/discard", headers=sre_headers,
                                       json={"reason": f"customer rang from {phone}, mail {email}"})
            assert discarded.status_code == 200, discarded.text

            started = await api.post("/api/v1/fallbacks", headers=sre_headers, json={
                "site": site, "system": "appointments", "reason": f"tool down, call {phone} or {email}"})
            assert started.status_code == 201, started.text
            ended = await api.post(f"/api/v1/fallbacks/{started.json()['id']}/end", headers=sre_headers,
                                   json={"reason": f"back up, says {email}"})
            assert ended.status_code == 200, ended.text

            await snapshot_drift_ignored(api, settings, tmp_path, site,
                                         {"Authorization": f"Bearer {sre_unsafe_sub}"}, email, phone, name)
    finally:
        process.stop()

    logs = {path.name: path.read_text(errors="replace") for path in workdir.rglob("*.log")}
    assert "Application startup complete" in logs["backend-pii.log"]
    markers = {"e-mail": email, "phone": phone, "name": name, "phone as an id": digits,
               "national id": birth_id, "name as a code": person,
               **{f"token {i}": secret for i, secret in enumerate(secrets)},
               **{f"token signature {i}": secret.rsplit(".", 1)[1] for i, secret in enumerate(secrets)}}
    in_logs = {(what, file) for file, text in logs.items() for what, marker in markers.items()
               if marker in text}
    lines = [line[:300] for text in logs.values() for line in text.splitlines()
             if any(m in line for m in markers.values())]
    assert not in_logs, f"found in logs: {sorted(in_logs)}: {lines[:5]}"

    tables = [r["table_name"] for r in await pool.fetch(
        "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")]
    assert {"events", "failures", "audit_log", "journeys"} <= set(tables)
    in_tables = set()
    for table in tables:
        for what, marker in markers.items():
            hits = await pool.fetchval(f'SELECT count(*) FROM "{table}" t'
                                       " WHERE strpos(row_to_json(t)::text, $1) > 0", marker)
            if hits:
                in_tables.add((what, table))
    assert not in_tables, f"found at rest: {sorted(in_tables)}"
    sub_at_rest = {table for table in tables if await pool.fetchval(
        f'SELECT count(*) FROM "{table}" t WHERE strpos(row_to_json(t)::text, $1) > 0', unsafe_sub)}
    assert sub_at_rest == set()

    # and none left in JetStream: refused messages are erased once their failures are stored
    in_streams = await stream_hits(js, markers, first_seq)
    assert not in_streams, f"found in JetStream: {sorted(in_streams)}"


def personal_in_typed_fields(site: str, uid: str, digits: str, birth_id: str, person: str) -> list[dict]:
    """Events that decode, carrying personal data where only references and codes belong."""
    booked = {"site": site, "service": "passport", "slot_start": datetime.now(UTC).isoformat(),
              "channel": "web"}
    return [
        cloud_event("customer.arrived", f"queue:{digits}", {"site": site}),
        cloud_event("customer.arrived", f"queue:L-{uid}", {"site": site, "links": [f"crm:{birth_id}"]}),
        cloud_event("appointment.booked", f"queue:S-{uid}", {**booked, "service": person}, source="/queue"),
        cloud_event("customer.arrived", f"queue:I-{uid}", {"site": site}, id=person),
        cloud_event("command.result", f"queue:R-{uid}", {"command_id": f"c-{uid}", "status": "failed",
                                                          "error": f"customer {digits} unknown"}),
    ]


async def stream_ends(js) -> dict[str, int]:
    """Where each stream's messages of this test will start (the session's earlier ones are other tests')."""
    return {stream: (await js.stream_info(stream)).state.last_seq + 1
            for stream in (EVENTS_STREAM, COMMANDS_STREAM)}


async def stream_hits(js, markers: dict[str, str], first_seq: dict[str, int]) -> set[tuple[str, str]]:
    """Every message this test left in both streams, read through the JetStream API, checked for the
    markers."""
    hits: set[tuple[str, str]] = set()
    for stream, first in first_seq.items():
        state = (await js.stream_info(stream)).state
        for seq in range(max(first, state.first_seq), state.last_seq + 1):
            try:
                message = await js.get_msg(stream, seq)
            except NotFoundError:  # deleted or erased
                continue
            text = (message.data or b"").decode(errors="replace")
            hits |= {(what, stream) for what, marker in markers.items() if marker in text}
    return hits


async def snapshot_drift_ignored(api: httpx.AsyncClient, settings, folder, site: str, headers: dict[str, str],
                                 email: str, phone: str, name: str) -> None:
    """A connector's record carrying personal fields becomes drift (stored with its record), which an
    operator ignores with a reason naming the customer."""
    queue = still_queue(site)
    now = datetime.now(UTC)
    ref = f"queue:P-{site}"
    queue.records[ref] = Record(ref=ref, site=site, created_at=now, updated_at=now, stage="waiting", fields={
        "ticket": "P-1", "service": f"callback {phone}", "email": email, "customer": {"name": name}})
    async with running(settings, folder, queue):
        started = await api.post("/api/v1/reconciliation/runs", headers=headers,
                                 json={"system": "queue", "site": site, "reason": "checking"})
        assert started.status_code == 202, started.text

        async def drifted() -> list[dict]:
            page = await api.get("/api/v1/reconciliation/drift", params={"site": site}, headers=headers)
            return page.json()["items"]

        [item] = await eventually(drifted)
    assert item["kind"] == "missing_here" and item["theirs"]["ticket"] == "P-1", item
    # only what the queue is compared on or read
    assert set(item["theirs"]) == {"stage", "ticket", "service"}, item
    ignored = await api.post(f"/api/v1/reconciliation/drift/{item['id']}/resolve", headers=headers,
                             json={"action": "ignore", "reason": f"test customer {email}"})
    assert ignored.status_code == 200, ignored.text


async def test_an_event_posted_with_unknown_fields_reaches_the_stream_without_them(api, js, token, uid):
    """Dropped is dropped: what HTTP ingest publishes holds only what the event type knows, and the
    journey is made of it as usual."""
    event = cloud_event("customer.arrived", f"queue:U-{uid}",
                        {"site": f"u-{uid}", "visitor_label": "Jane Doe"})
    event["x_vendor_note"] = "Jane Doe waited by the door"
    connector = {"Authorization": f"Bearer {token('connector', system='queue')}"}
    before = await _dropped(api)
    posted = await api.post("/api/v1/events", json=event, headers=connector)
    assert posted.status_code == 202 and posted.json()["accepted"], posted.text
    kept = await js.get_last_msg(EVENTS_STREAM, "svc.events.queue.customer.arrived")
    stored = msgspec.json.decode(kept.data)
    assert stored["id"] == event["id"] and stored["data"] == {"site": f"u-{uid}"}
    assert b"Jane" not in kept.data
    assert await _dropped(api) == before + 2  # counted where they were dropped, not where they never came


async def _dropped(api: httpx.AsyncClient) -> float:
    metrics = (await api.get("/metrics")).text
    line = 'switchboard_unknown_fields_dropped_total{type="customer.arrived"} '
    return sum(float(row.removeprefix(line)) for row in metrics.splitlines() if row.startswith(line))
