"""OpenTelemetry traces from a connector's publish through apply to the websocket push.

The W3C `traceparent` travels inside the event (the CloudEvents extension, stored in `events`) and on
the live bus as a NATS header. Spans, each the child of the one before:
`publish <type>` (connector SDK) → `apply <type>` (apply worker, from fetch to commit) →
`live journeys` (the replica that applied, when it publishes the journey) → `websocket push` (every
replica's hub, when it fans the update out to its clients).

Connectors decide sampling (`SWITCHBOARD_OTEL_SAMPLE_RATIO`); everything downstream follows the
decision in the `traceparent` flags. With the exporter `none` (the default) nothing is recorded and
the cost on the ingest path is one boolean test per batch.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from switchboard.settings import TracingSection

_propagator = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None


def configure(section: TracingSection, service: str) -> None:
    """Set up this process's tracer from its section of the settings; `none` leaves tracing off."""
    if section.otel_exporter == "none":
        return
    if section.otel_exporter == "console":
        exporter: SpanExporter = ConsoleSpanExporter(out=sys.stderr,
                                                     formatter=lambda span: span.to_json(indent=None) + "\n")
    elif section.otel_exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
        except ImportError as exc:
            raise SystemExit("SWITCHBOARD_OTEL_EXPORTER=otlp needs the otlp extra: pip install"
                             " 'switchboard[otlp]' (the image and requirements-dev.lock have it)") from exc
        exporter = OTLPSpanExporter(endpoint=section.otel_endpoint or None)
    else:
        raise SystemExit(f"SWITCHBOARD_OTEL_EXPORTER: none, console or otlp, not {section.otel_exporter!r}")
    use(exporter, service, section.otel_sample_ratio)


def use(exporter: SpanExporter, service: str, sample_ratio: float = 1.0) -> TracerProvider:
    """Export this process's spans to `exporter` (tests hand an in-memory one)."""
    global _provider  # noqa: PLW0603 - one tracer per process, like the logging configuration
    _provider = TracerProvider(resource=Resource.create({"service.name": service}),
                               sampler=ParentBased(TraceIdRatioBased(sample_ratio)))
    _provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    return _provider


def stop() -> None:
    """Flush and switch tracing off."""
    global _provider  # noqa: PLW0603
    if _provider is not None:
        _provider.shutdown()
        _provider = None


def enabled() -> bool:
    return _provider is not None


def tracer() -> trace.Tracer:
    return (_provider or trace.NoOpTracerProvider()).get_tracer("switchboard")


def parent(traceparent: str | None) -> Context | None:
    """The context a W3C `traceparent` continues, or None (a new trace)."""
    return _propagator.extract({"traceparent": traceparent}) if traceparent else None


def traceparent_of(span: Span) -> str | None:
    """The W3C `traceparent` naming `span`, for the next hop; None when the span is not sampled."""
    context = span.get_span_context()
    if not (context.is_valid and context.trace_flags.sampled):
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def is_sampled(traceparent: str | None) -> bool:
    return bool(traceparent) and int(traceparent[-2:], 16) & 1 == 1  # type: ignore[index]


@contextmanager
def span(name: str, traceparent: str | None, kind: SpanKind = SpanKind.INTERNAL,
         attributes: dict[str, str | int] | None = None) -> Iterator[Span]:
    """A span continuing `traceparent` (a new trace when None)."""
    with tracer().start_as_current_span(name, context=parent(traceparent), kind=kind,
                                        attributes=attributes) as current:
        yield current
