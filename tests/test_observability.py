"""Observability against real backend processes: metrics of every stage, traces from a connector's publish
through apply to the websocket push, JSON logs that never carry a token or personal data, and the
Grafana dashboard's expressions against what /metrics really exposes."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
import websockets
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from backend.settings import BackendSettings
from connectors.sdk.publisher import Publisher
from connectors.sdk.spool import Spool
from switchboard import logs, tracing
from switchboard.events import Event
from switchboard.settings import TokenSection
from switchboard.tokens import mint_token
from tests.support.backends import JWT_SECRET, nats_connect, own_stack
from tests.support.events import cloud_event, publish
from tests.support.waits import eventually
from tools.backend_process import BackendProcess

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "docs" / "grafana" / "switchboard.json"
PERSONAL = {"email": "ada@example.org", "phone": "+44 20 7946 0958", "name": "Ada Lovelace"}
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def samples(text: str) -> dict[str, dict[str, float]]:
    """Metric name → {label set as text: value}, from the Prometheus text format."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            out.setdefault(match.group(1), {})[match.group(2) or ""] = float(match.group(3))
    return out


def labelled(series: dict[str, float], **labels: str) -> float:
    wanted = {f'{k}="{v}"' for k, v in labels.items()}
    return sum(v for key, v in series.items() if wanted <= set(key.strip("{}").split(",")))


async def metrics_text(backend: BackendProcess) -> str:
    async with httpx_client(backend) as client:
        return (await client.get("/metrics")).text


def httpx_client(backend: BackendProcess) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=backend.url, timeout=10)


async def test_metrics_count_every_stage_by_type_and_system(backend, js, pool, uid):
    site = f"obs-{uid}"
    # the session's backend has counted other modules' events: this test judges what its own add
    before = samples(await metrics_text(backend))

    def grew(seen: dict[str, dict[str, float]], name: str, by: int = 1, **labels: str) -> bool:
        return labelled(seen.get(name, {}), **labels) - labelled(before.get(name, {}), **labels) >= by

    await publish(js, cloud_event("customer.arrived", f"queue:T-{uid}", {"site": site}))
    await publish(js, cloud_event("customer.arrived", f"queue:P-{uid}", {"site": site, **PERSONAL}))
    await publish(js, b'{"not": "an event"}', subject=f"svc.events.madeup{uid}.anything.at.all")

    async def counted() -> dict[str, dict[str, float]] | None:
        seen = samples(await metrics_text(backend))
        ok = (grew(seen, "switchboard_events_applied_total", type="customer.arrived", system="queue")
              and grew(seen, "switchboard_events_failed_total", kind="pii_rejected", type="customer.arrived",
                       system="queue")
              and grew(seen, "switchboard_events_in_total", type="other", system="other"))
        return seen if ok else None

    seen = await eventually(counted)
    assert grew(seen, "switchboard_events_in_total", 2, type="customer.arrived", system="queue")
    assert not any(uid in key for name in seen for key in seen[name]), "made-up labels are bounded to `other`"
    assert grew(seen, "switchboard_apply_batch_seconds_count")
    assert grew(seen, "switchboard_ingest_delay_seconds_count")
    assert "switchboard_live_connections" in seen

    async def sampled_like_the_database() -> bool:
        seen = samples(await metrics_text(backend))
        rows = await pool.fetch("SELECT status, count(*) AS n FROM commands GROUP BY status")
        counts = {r["status"]: r["n"] for r in rows}
        info = await js.consumer_info("SVC_EVENTS", "switchboard-apply")
        return ("switchboard_consumer_pending" in seen
                and seen["switchboard_consumer_pending"][""] == info.num_pending
                and all(labelled(seen.get("switchboard_outbox_commands", {}), status=s) == counts.get(s, 0)
                        for s in ("pending", "held", "sent")))

    await eventually(sampled_like_the_database, timeout=20, interval=0.5)


async def test_the_grafana_dashboard_charts_only_metrics_the_backend_exposes(backend, api, token):
    await api.get("/api/v1/journeys", headers={"Authorization": f"Bearer {token('manager')}"})
    text = await metrics_text(backend)
    exposed = set(samples(text)) | {m.group(1) for m in re.finditer(r"^# TYPE (\S+) ", text, re.MULTILINE)}
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(expressions) >= 10
    used = {name for e in expressions for name in re.findall(r"\bswitchboard_[a-z_]+\b", e)}
    missing = {name for name in used if name not in exposed and name.removesuffix("_total") not in exposed}
    assert not missing, f"the dashboard charts metrics /metrics does not have: {sorted(missing)}"
    for stage in ("events_in", "events_applied", "events_failed", "apply_batch_seconds", "consumer_pending",
                  "outbox_commands", "live_connections", "live_dropped"):
        assert any(f"switchboard_{stage}" in e for e in expressions), f"no panel for {stage}"


def test_json_log_lines_never_carry_tokens_or_personal_data():
    jwt = mint_token(TokenSection(jwt_secret=JWT_SECRET), sub="u-1", roles=["sre"], sites="*")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger(f"test.logs.{id(stream)}")
    logger.addHandler(handler)
    logger.propagate = False
    logger.warning("refused Authorization: Bearer %s from %s", jwt, "ada@example.org")
    logger.warning("a token in a URL /api/v1/live?token=%s&x=1", jwt)
    logger.warning("payload %s", {"name": "Ada Lovelace", "site": "north",
                                  "contact": {"phone": "+44 20 7946 0958"}})
    logger.warning("context", extra={"email": "ada@example.org", "site": "north", "subject": "queue:T-1"})
    try:
        raise ValueError(f"bad token {jwt}")
    except ValueError:
        logger.exception("failed")
    logger.warning("a format string that does not fit its arguments %d", "ada@example.org")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 6
    parsed = [json.loads(line) for line in lines]
    everything = stream.getvalue()
    for secret in (jwt, jwt.split(".")[1], "ada@example.org", "Ada Lovelace", "+44 20 7946 0958", "7946"):
        assert secret not in everything
    assert parsed[0]["level"] == "warning"
    assert parsed[0]["msg"].startswith("refused Authorization: Bearer [redacted]")
    assert parsed[2]["msg"].count("[redacted]") == 2 and "'site': 'north'" in parsed[2]["msg"]
    assert parsed[3]["fields"] == {"email": "[redacted]", "site": "north", "subject": "queue:T-1"}
    assert "ValueError: bad token [redacted]" in parsed[4]["exc"]
    assert parsed[5]["msg"].startswith("a format string that does not fit its arguments")


@pytest.fixture
async def traced_world(server_urls, workdir):
    """A backend of its own (its own NATS and database) exporting spans to its log as JSON lines."""
    env = {"SWITCHBOARD_OTEL_EXPORTER": "console", "SWITCHBOARD_LOG_LEVEL": "INFO",
           "SWITCHBOARD_LOG_FORMAT": "json"}
    async with own_stack(server_urls["database_url"], workdir, env) as stack:
        yield stack.settings, stack.backend


def _spans(log_path: Path) -> list[dict[str, Any]]:
    found = []
    for line in log_path.read_text().splitlines():
        record = json.loads(line)  # every line is JSON: log records and spans alike
        if "context" in record and "parent_id" in record:
            found.append(record)
    return found


async def test_a_trace_runs_from_the_connector_publish_through_apply_to_the_websocket_push(traced_world,
                                                                                          workdir, uid):
    settings, backend = traced_world
    exporter = InMemorySpanExporter()
    tracing.use(exporter, "test-connector")
    spool = Spool(workdir / f"spool-{uid}")
    publisher = Publisher(spool)
    site = f"traced-{uid}"
    token = mint_token(settings.tokens, sub="u-obs", roles=["manager"], sites=[site])
    nc = await nats_connect(settings)
    sender = asyncio.create_task(publisher.run())
    try:
        async with websockets.connect(backend.url.replace("http", "ws") + "/api/v1/live", open_timeout=10,
                                      additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            await ws.send(json.dumps({"op": "subscribe", "topics": ["journeys"]}))
            event = msgspec.json.decode(msgspec.json.encode(
                cloud_event("customer.arrived", f"queue:T-{uid}", {"site": site})), type=Event)
            publisher.attach(nc)
            await publisher.emit([event])
            assert await publisher.drain(10)
            async with asyncio.timeout(15):
                frame = json.loads(await ws.recv())
                while frame.get("op") != "update":  # the snapshot first, then the update
                    frame = json.loads(await ws.recv())
            assert frame["data"]["refs"] == [f"queue:T-{uid}"]
    finally:
        sender.cancel()
        await nc.close()
        spool.close()
        tracing.stop()

    (publish_span,) = exporter.get_finished_spans()
    trace_id = f"0x{publish_span.context.trace_id:032x}"
    assert event.traceparent == (f"00-{publish_span.context.trace_id:032x}"
                                 f"-{publish_span.context.span_id:016x}"
                                 f"-{int(publish_span.context.trace_flags):02x}")
    assert tracing.is_sampled(event.traceparent)

    def chain() -> dict[str, dict[str, Any]] | None:
        mine = {s["name"]: s for s in _spans(backend.log_path) if s["context"]["trace_id"] == trace_id}
        return mine if {"apply customer.arrived", "live journeys", "websocket push"} <= set(mine) else None

    spans = await eventually(lambda: asyncio.to_thread(chain), timeout=15)
    assert spans["apply customer.arrived"]["parent_id"] == f"0x{publish_span.context.span_id:016x}"
    assert spans["apply customer.arrived"]["attributes"]["switchboard.applied"] is True
    assert spans["live journeys"]["parent_id"] == spans["apply customer.arrived"]["context"]["span_id"]
    assert spans["websocket push"]["parent_id"] == spans["live journeys"]["context"]["span_id"]
    stored = await _stored_traceparent(settings, event.id)
    assert stored == event.traceparent


async def _stored_traceparent(settings: BackendSettings, event_id: str) -> str | None:
    conn = await asyncpg.connect(settings.database.database_url)
    try:
        return await conn.fetchval("SELECT traceparent FROM events WHERE id = $1", event_id)
    finally:
        await conn.close()


async def test_backend_logs_are_json_lines_without_tokens_or_personal_data(traced_world, uid):
    settings, backend = traced_world
    good = mint_token(settings.tokens, sub="u-log", roles=["sre"], sites="*")
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    async with httpx_client(backend) as client:
        for token in (good, forged):
            await client.get("/api/v1/failures", headers={"Authorization": f"Bearer {token}"})
        await client.get(f"/api/v1/live?token={forged}")
    nc = await nats_connect(settings)
    personal = cloud_event("customer.arrived", f"queue:L-{uid}", {"site": "north", **PERSONAL})
    await publish(nc.jetstream(), personal)
    await nc.close()

    async def refused() -> bool:
        async with httpx_client(backend) as client:
            failures = (await client.get("/api/v1/failures",
                                         headers={"Authorization": f"Bearer {good}"})).json()
        return any(f["event_id"] == personal["id"] and f["kind"] == "pii_rejected" for f in failures["items"])

    await eventually(refused)
    text = backend.log_path.read_text()
    assert text.strip(), "the backend logged at INFO"
    for line in text.splitlines():
        json.loads(line)
    for secret in (good, forged, good.split(".")[1], *PERSONAL.values()):
        assert secret not in text
