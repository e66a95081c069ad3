"""No personal data and no secrets at rest or in logs: after a run of hostile inputs carrying personal
data and tokens through every way in (NATS, HTTP ingest, the live websocket's `?token=`, refused
tokens, an operator's free-text reason), neither any log file of the session nor any row of any
table holds them. The backend for this run logs at DEBUG, so even the most talkative level is checked."""

from __future__ import annotations

from datetime import timedelta

import httpx
import msgspec
import websockets

from tests.conftest import cloud_event, eventually, publish, start_backend


async def test_personal_data_and_tokens_reach_neither_logs_nor_tables(settings, workdir, pool, js, token, uid):
    email, phone, name = f"ada.{uid}@example.org", f"+44 20 7946 {int(uid, 16) % 10_000:04d}", f"Lovelace{uid}"
    live_token, expired = token("manager"), token("manager", ttl=timedelta(seconds=-10))
    connector = token("connector", system="queue")
    sre = token("sre")
    secrets = [live_token, expired, connector, sre]
    site = f"pii-{uid}"
    process = start_backend(settings, workdir / "backend-pii.log", {"SWITCHBOARD_LOG_LEVEL": "DEBUG"})
    try:
        async with httpx.AsyncClient(base_url=process.url, timeout=10) as api:
            await publish(js, cloud_event("customer.arrived", f"queue:A-{uid}", {"site": site, "email": email}))
            await publish(js, cloud_event("customer.arrived", f"queue:B-{uid}", {
                "site": site, "extra": {"contact": {"phone": phone}, "full_name": name}}))
            await js.publish("svc.events.queue.customer.arrived",
                             b'{"id": "' + uid.encode() + b'", "broken": "' + email.encode() + b'"')
            batch = [cloud_event("customer.arrived", f"queue:C-{uid}", {"site": site, "note": f"{name} {phone}"}),
                     {"type": "customer.arrived", "email": email, "data": {"site": site}}]
            answer = await api.post("/api/v1/events", json=batch, headers={"Authorization": f"Bearer {connector}"})
            assert answer.status_code == 202 and len(answer.json()["rejected"]) == 2
            for bad in (expired, live_token + "x", f"{live_token}.{email}"):
                assert (await api.get("/api/v1/flow", headers={"Authorization": f"Bearer {bad}"})).status_code == 401
            ws_url = process.url.replace("http", "ws", 1) + f"/api/v1/live?token={live_token}"
            async with websockets.connect(ws_url, origin=process.url, open_timeout=10) as ws:
                await ws.send(msgspec.json.encode({"op": "subscribe", "topics": ["flow"], "sites": [email]}).decode())
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
    finally:
        process.stop()

    logs = {path.name: path.read_text(errors="replace") for path in workdir.rglob("*.log")}
    assert "Application startup complete" in logs["backend-pii.log"]
    markers = {"e-mail": email, "phone": phone, "name": name,
               **{f"token {i}": secret for i, secret in enumerate(secrets)},
               **{f"token signature {i}": secret.rsplit(".", 1)[1] for i, secret in enumerate(secrets)}}
    in_logs = {(what, file) for file, text in logs.items() for what, marker in markers.items() if marker in text}
    lines = [line[:300] for text in logs.values() for line in text.splitlines()
             if any(m in line for m in markers.values())]
    assert not in_logs, f"found in logs: {sorted(in_logs)}: {lines[:5]}"

    tables = [r["table_name"] for r in await pool.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")]
    assert {"events", "failures", "audit_log", "journeys"} <= set(tables)
    in_tables = set()
    for table in tables:
        for what, marker in markers.items():
            hits = await pool.fetchval(f'SELECT count(*) FROM "{table}" t WHERE strpos(row_to_json(t)::text, $1) > 0',
                                       marker)
            if hits:
                in_tables.add((what, table))
    assert not in_tables, f"found at rest: {sorted(in_tables)}"
