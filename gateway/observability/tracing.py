"""OpenTelemetry traces, off unless the standard OTEL_* variables ask for them.

On when OTEL_TRACES_EXPORTER names an exporter (`otlp`, `console`; `none` is off) or an
OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT),
unless OTEL_SDK_DISABLED=true. Everything else is the SDK's own reading of the standard
variables: OTEL_SERVICE_NAME (default `paygate`), OTEL_RESOURCE_ATTRIBUTES,
OTEL_TRACES_SAMPLER/_ARG, the OTLP endpoint, headers, certificates and timeout. OTLP
goes over HTTP/protobuf; the SDK is the `otel` extra (`pip install 'paygate[otel]'`).

What is traced: a server span per webhook (continuing an incoming W3C `traceparent`)
with `verify`, `dedup` and `group_commit` children; the writer's batch span, linked to
the requests it carried; a span per relay round and per staging batch. The trace
context of the request that recorded an event travels with it (the outbox row's
`traceparent`) into the Kafka message's `traceparent` header.

While off, `tracer` is None and every hook here returns a shared no-op context
manager or None without touching the SDK (which is not even imported): a few attribute
reads per request (bench.inproc shows no difference).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from gateway.errors import ConfigError

log = logging.getLogger(__name__)

tracer: Any = None  # an opentelemetry Tracer while tracing is on
_OFF: AbstractContextManager[Any] = nullcontext()
SERVICE_NAME = "paygate"


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether the OTEL_* variables ask for traces."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    )


def configure(environ: Mapping[str, str] | None = None) -> bool:
    """Start tracing when the environment asks for it; True when it is on. A process
    calls it once at start-up (each server process of `paygate serve` is its own)."""
    environ = os.environ if environ is None else environ
    if not wanted(environ):
        return False
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise ConfigError(
            "OTEL_* asks for traces but the OpenTelemetry SDK is not installed "
            "(pip install 'paygate[otel]')"
        ) from None
    from opentelemetry import trace

    provider = TracerProvider(resource=_resource())  # flushes its spans at exit
    for exporter in _exporters(environ):
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    use(provider)
    return True


def use(provider: Any) -> None:
    """Trace through this TracerProvider (tests hand in one with an in-memory exporter);
    None turns tracing off again."""
    global tracer, _api
    if provider is None:
        tracer = None
        return
    _api = _Api()
    tracer = provider.get_tracer("paygate")


class _Api:
    """The OpenTelemetry names the hooks use, imported once tracing is on (and never
    while it is off)."""

    def __init__(self) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.propagator = TraceContextTextMapPropagator()
        self.server = trace.SpanKind.SERVER
        self.current_span = trace.get_current_span
        self.link = trace.Link
        self.span_context = trace.SpanContext
        self.flags = trace.TraceFlags
        self.empty = context.Context


_api: _Api


def _resource() -> Any:
    from opentelemetry.sdk.resources import Resource

    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    return resource


def _exporters(environ: Mapping[str, str]) -> list[Any]:
    names = [n.strip() for n in environ.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",")]
    exporters: list[Any] = []
    for name in filter(None, names):
        if name == "none":
            continue
        if name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter())
        elif name == "otlp":
            protocol = (
                environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf"
            ).strip()
            if protocol != "http/protobuf":
                raise ConfigError(
                    f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: paygate exports OTLP over "
                    "http/protobuf (point it at the collector's HTTP port, usually 4318)"
                )
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter())
        else:
            raise ConfigError(f"OTEL_TRACES_EXPORTER={name}: expected otlp, console or none")
    return exporters


# -- hooks the code calls (cheap while off) ------------------------------------------------


def span(name: str, **attributes: Any) -> AbstractContextManager[Any]:
    """A child of the current span, or the shared no-op."""
    if tracer is None:
        return _OFF
    return tracer.start_as_current_span(name, attributes=attributes or None)


def server_span(
    name: str, headers: Mapping[str, str], **attributes: Any
) -> AbstractContextManager[Any]:
    """The span of one incoming request, continuing the caller's W3C `traceparent`."""
    if tracer is None:
        return _OFF
    parent = _api.propagator.extract(headers)
    return tracer.start_as_current_span(
        name, context=parent, kind=_api.server, attributes=attributes or None
    )


def current() -> Any:
    """The current span's context, to link to or to carry with an event; None while off
    or outside any span."""
    if tracer is None:
        return None
    context = _api.current_span().get_span_context()
    return context if context.is_valid else None


def linked_span(
    name: str, contexts: Iterable[Any], **attributes: Any
) -> AbstractContextManager[Any]:
    """A new root span (a batch of many requests has no one parent) linked to each of
    `contexts` (span contexts from `current`, None skipped)."""
    if tracer is None:
        return _OFF
    links = [_api.link(c) for c in contexts if c is not None]
    return tracer.start_as_current_span(
        name, context=_api.empty(), links=links, attributes=attributes or None
    )


def traceparent(context: Any) -> str | None:
    """The W3C `traceparent` value of a span context (None for None)."""
    if context is None:
        return None
    flags = int(context.trace_flags)
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags:02x}"


def parse(value: str | None) -> Any:
    """The span context a `traceparent` value names (remote), None when absent or malformed."""
    if not value or tracer is None:
        return None
    parts = value.split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    context = _api.span_context(trace_id, span_id, is_remote=True, trace_flags=_api.flags(flags))
    return context if context.is_valid else None


def kafka_headers(value: str | None) -> list[tuple[str, bytes]]:
    """The header an event carries so a consumer can continue its trace."""
    return [] if not value else [("traceparent", value.encode())]
