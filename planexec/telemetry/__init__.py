"""OpenTelemetry for both services: traces, metrics, W3C Trace Context (DESIGN §7).

``setup_telemetry`` installs the process-global tracer and meter providers once and adds the
span exporter a setting asks for; later calls (tests build many apps in one process) reuse the
providers. Spans and instruments are created through the OTel API (``TRACER``, ``METRICS``), so
code that records them works, as a no-op, before or without any setup.

Metrics go to Prometheus: ``install_metrics_route(app)`` serves ``GET /metrics`` (Prometheus
text exposition format 0.0.4, no authentication: bind the services to a private network) and
``serve_metrics(host, port)`` does the same for a process without an HTTP API (the worker).
With the ``otlp`` exporter, metrics are also pushed over OTLP every 60 s.

Span and attribute names follow the OTel GenAI semantic conventions (``gen_ai.operation.name``,
``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.usage.*``, ``gen_ai.tool.name``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from opentelemetry import trace

from ._context import (
    ExportAwareSampler,
    KeepCallerTraceparent,
    context_from_traceparent,
    current_ids,
    current_traceparent,
    trace_id_of,
)
from ._metrics import APPROVALS, METRICS, SCOPE, ApprovalClock, Instruments, metrics_text
from ._setup import Exporter, Telemetry, resolve_exporter, setup_telemetry

if TYPE_CHECKING:
    from fastapi import FastAPI

TRACER = trace.get_tracer(SCOPE)
"""Tracer of planexec's spans (a proxy until ``setup_telemetry`` installs the SDK)."""


def install_metrics_route(app: FastAPI) -> None:
    """Serve ``GET /metrics`` (Prometheus text format) on ``app``.

    The route needs no API key and is left out of the OpenAPI document.
    """
    from fastapi import Response

    async def prometheus_metrics() -> Response:
        body, content_type = metrics_text()
        return Response(body, media_type=content_type)

    app.add_api_route("/metrics", prometheus_metrics, methods=["GET"], include_in_schema=False)


def serve_metrics(host: str, port: int) -> None:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread (``prometheus_client``)."""
    from prometheus_client import start_http_server

    start_http_server(port, addr=host)


__all__ = [
    "APPROVALS",
    "METRICS",
    "SCOPE",
    "TRACER",
    "ApprovalClock",
    "ExportAwareSampler",
    "Exporter",
    "Instruments",
    "KeepCallerTraceparent",
    "Telemetry",
    "context_from_traceparent",
    "current_ids",
    "current_traceparent",
    "install_metrics_route",
    "metrics_text",
    "resolve_exporter",
    "serve_metrics",
    "setup_telemetry",
    "trace_id_of",
]
