"""Process-wide providers, exporters and instrumentations (set once, reused)."""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from opentelemetry import metrics, propagate, trace
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from ._context import ExportAwareSampler, KeepCallerTraceparent

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from sqlalchemy.ext.asyncio import AsyncEngine

    from planexec.settings import CommonSettings

Exporter = Literal["none", "console", "otlp", "memory"]
"""Where finished spans go: nowhere, stdout, an OTLP/HTTP collector, or memory (tests)."""


@dataclass
class Telemetry:
    """Handle on the process's telemetry; instruments apps and engines of one service."""

    service_name: str
    """Name this service asked for (the process resource keeps the first one's name)."""
    tracer_provider: TracerProvider
    """The process-global SDK tracer provider."""
    meter_provider: MeterProvider
    """The process-global SDK meter provider (Prometheus reader attached)."""
    memory_exporter: InMemorySpanExporter | None
    """The in-memory exporter when ``otel_exporter`` is ``memory`` (tests), else None."""
    exporting: bool = True
    """Whether any span exporter is attached in this process."""

    def instrument_app(self, app: FastAPI) -> None:
        """Trace and measure every request of ``app`` (server spans; ``/metrics`` excluded)."""
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(
            app,
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            excluded_urls="/metrics,/healthz,/readyz",
        )

    def instrument_engine(self, engine: AsyncEngine) -> None:
        """Trace the statements of an async SQLAlchemy engine (via its ``sync_engine``).

        Only when spans are exported: statement spans nobody receives cost about 10 % of the
        planner's ``POST /v1/plans`` throughput (measured with ``bench.planner_load``: 486
        plans/s with them, 555 without, three alternating runs each).
        """
        if self.exporting:
            _instrument_engine(engine, self.tracer_provider, self.meter_provider)


@dataclass
class _Process:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    sampler: ExportAwareSampler
    exporters: set[str]
    memory: InMemorySpanExporter | None = None


_lock = threading.Lock()
_process: list[_Process] = []  # at most one: the providers are process-global in OTel
_engines: weakref.WeakSet[object] = weakref.WeakSet()


def resolve_exporter(setting: Exporter | None) -> Exporter:
    """The exporter to use: the setting, else ``otlp`` when an OTLP endpoint is set, else none.

    The endpoint variables are the OTel SDK's ``OTEL_EXPORTER_OTLP_ENDPOINT`` and
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``.
    """
    if setting is not None:
        return setting
    env = os.environ
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return "otlp"
    return "none"


def setup_telemetry(service_name: str, settings: CommonSettings) -> Telemetry:
    """Install (once per process) the SDK providers and the exporter ``settings`` asks for.

    The first call creates the tracer provider (resource ``service.name`` = ``OTEL_SERVICE_NAME``
    or ``service_name``), the meter provider with a Prometheus reader (plus an OTLP reader when
    the exporter is ``otlp``), and instruments ``httpx2`` clients made
    from then on. Every call adds its span exporter if that kind is not attached yet: ``none``
    adds nothing (spans still get ids, for logs and ``traceparent``), ``console`` prints them,
    ``otlp`` sends them over OTLP/HTTP (protobuf) configured by the standard
    ``OTEL_EXPORTER_OTLP_*`` variables, ``memory`` keeps them for tests.

    Returns:
        The process's ``Telemetry`` handle for ``service_name``.
    """
    exporter = resolve_exporter(settings.otel_exporter)
    with _lock:
        if not _process:
            _process.append(_install(service_name, exporter))
        process = _process[0]
        if exporter != "none" and exporter not in process.exporters:
            process.exporters.add(exporter)
            memory = _add_span_exporter(process.tracer_provider, exporter)
            process.memory = process.memory or memory
            process.sampler.exporting = True
    return Telemetry(
        service_name,
        process.tracer_provider,
        process.meter_provider,
        process.memory,
        exporting=bool(process.exporters),
    )


def _install(service_name: str, exporter: Exporter) -> _Process:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics.export import MetricReader

    resource = Resource.create(
        {"service.name": os.environ.get("OTEL_SERVICE_NAME") or service_name}
    )
    sampler = ExportAwareSampler()
    tracer_provider = TracerProvider(resource=resource, sampler=sampler)
    trace.set_tracer_provider(tracer_provider)
    readers: list[MetricReader] = [PrometheusMetricReader()]
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    # Prometheus text format shows no exemplars; not collecting them saves a span lookup per
    # measurement.
    meter_provider = MeterProvider(
        metric_readers=readers, resource=resource, exemplar_filter=AlwaysOffExemplarFilter()
    )
    metrics.set_meter_provider(meter_provider)
    propagate.set_global_textmap(KeepCallerTraceparent(propagate.get_global_textmap()))
    _instrument_clients(tracer_provider, meter_provider)
    return _Process(tracer_provider, meter_provider, sampler, set())


def _instrument_clients(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
    from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor

    # The OpenAI calls are covered by the planner's own ``plan.generate`` span (GenAI
    # attributes): opentelemetry-instrumentation-openai-v2 imports the original ``httpx``,
    # which planexec does not install (openai 3.x uses httpx2).
    HTTPX2ClientInstrumentor().instrument(
        tracer_provider=tracer_provider, meter_provider=meter_provider
    )


def _add_span_exporter(provider: TracerProvider, exporter: Exporter) -> InMemorySpanExporter | None:
    """Attach ``exporter``'s span processor; the in-memory exporter when that is the kind."""
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
    )
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    if exporter == "memory":
        memory = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(memory))
        return memory
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return None


def _instrument_engine(
    engine: AsyncEngine, tracer_provider: TracerProvider, meter_provider: MeterProvider
) -> None:
    # The instrumentor's instrument(engine=...) works once per process; EngineTracer is what
    # it builds for each engine, so build one per engine (SQLAlchemy events, sync_engine).
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer

    sync_engine = engine.sync_engine
    with _lock:
        if sync_engine in _engines:
            return
        _engines.add(sync_engine)
    scope = "opentelemetry.instrumentation.sqlalchemy"
    tracer = tracer_provider.get_tracer(scope)
    usage = meter_provider.get_meter(scope).create_up_down_counter(
        "db.client.connections.usage", "connections", "Connections in use or idle"
    )
    EngineTracer(tracer, sync_engine, usage)  # type: ignore[no-untyped-call]
