"""SWITCHBOARD_OTEL_EXPORTER=otlp: a real backend process exports its spans over OTLP/HTTP (protobuf) to a
receiver in the test, which decodes them with the OpenTelemetry protocol definitions."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.support.backends import nats_connect, own_stack
from tests.support.events import cloud_event, publish
from tests.support.waits import eventually


class OtlpReceiver(ThreadingHTTPServer):
    """Accepts POST /v1/traces as an OpenTelemetry collector does and keeps every span it decodes."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _OtlpHandler)
        self.spans: list[dict[str, Any]] = []
        self.refused: list[str] = []
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"

    def found(self, name: str, trace_id: str) -> dict[str, Any] | None:
        with self.lock:
            return next((s for s in self.spans if s["name"] == name and s["trace_id"] == trace_id), None)


class _OtlpHandler(BaseHTTPRequestHandler):
    server: OtlpReceiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path != "/v1/traces" or self.headers["Content-Type"] != "application/x-protobuf":
            with self.server.lock:
                self.server.refused.append(f"{self.path} {self.headers['Content-Type']}")
            self.send_response(404)
            self.end_headers()
            return
        request = ExportTraceServiceRequest.FromString(body)
        with self.server.lock:
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.server.spans.append({
                            "service": resource.get("service.name"), "scope": scope_spans.scope.name,
                            "name": span.name, "trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "attributes": {a.key: a.value for a in span.attributes}})
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        """Quiet: the test reads what arrived, not an access log."""


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
async def otlp_backend(server_urls, workdir, receiver):
    """A backend of its own (its own NATS and database, so that it alone applies) exporting over OTLP."""
    env = {"SWITCHBOARD_OTEL_EXPORTER": "otlp", "SWITCHBOARD_OTEL_ENDPOINT": receiver.endpoint}
    async with own_stack(server_urls["database_url"], workdir, env) as stack:
        yield stack.settings, stack.backend


async def test_a_backend_exports_the_spans_of_a_sampled_event_over_otlp(otlp_backend, receiver, uid):
    settings, backend = otlp_backend
    unsampled, trace_id, parent_span_id = secrets.token_hex(16), secrets.token_hex(16), secrets.token_hex(8)
    nc = await nats_connect(settings)
    try:
        # the connector's decision travels in the traceparent flags: 00 is not recorded, 01 is
        for traceparent in (f"00-{unsampled}-{secrets.token_hex(8)}-00",
                            f"00-{trace_id}-{parent_span_id}-01"):
            event = cloud_event("customer.arrived", f"queue:O-{traceparent[3:11]}", {"site": f"otlp-{uid}"})
            await publish(nc.jetstream(), {**event, "traceparent": traceparent})
    finally:
        await nc.close()

    async def exported() -> dict[str, Any] | None:
        return receiver.found("apply customer.arrived", trace_id)

    span = await eventually(exported, timeout=20)
    assert span["parent_span_id"] == parent_span_id
    assert span["service"] == "switchboard-backend" and span["scope"] == "switchboard"
    assert span["attributes"]["switchboard.applied"].bool_value is True
    with receiver.lock:  # applied before the sampled one, so it would have been exported by now
        assert [s for s in receiver.spans if s["trace_id"] == unsampled] == []
    assert receiver.refused == []
    assert backend.process.poll() is None, "the backend runs with the otlp exporter"
