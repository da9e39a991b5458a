"""W3C Trace Context helpers, the propagator and the sampler planexec installs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import CarrierT, Getter, Setter, TextMapPropagator
from opentelemetry.propagators.textmap import default_getter as DG
from opentelemetry.propagators.textmap import default_setter as DS
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import Link, Span, SpanKind, format_span_id, format_trace_id
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, or None outside a (sampled-in) span."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def context_from_traceparent(traceparent: str | None) -> Context | None:
    """A parent context continuing ``traceparent`` (W3C Trace Context); None when unset."""
    if not traceparent:
        return None
    return propagate.extract({"traceparent": traceparent})


def trace_id_of(span: Span) -> str | None:
    """The 32-hex trace id of ``span``, or None for an invalid (non-recording) span."""
    context = span.get_span_context()
    return format_trace_id(context.trace_id) if context.is_valid else None


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the current span, or None when there is none."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format_trace_id(context.trace_id), format_span_id(context.span_id)


class ExportAwareSampler(Sampler):
    """Parent-based always-on while a span exporter is attached, else drop.

    A dropped span still gets ids: logs, run events and ``traceparent`` (sampled flag off)
    carry them, so traces can be correlated even when none is exported; but it records
    nothing, which keeps a step's span at a few microseconds when the exporter is ``none``.
    """

    def __init__(self) -> None:
        self.exporting = False
        """True once a span exporter is attached (set by ``setup_telemetry``)."""
        self._on = ParentBased(ALWAYS_ON)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        """The parent-based decision while exporting, else ``DROP``."""
        sampler = self._on if self.exporting else ALWAYS_OFF
        return sampler.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        """Sampler description, as the SDK reports it."""
        return "ExportAware{" + ("ParentBased{AlwaysOnSampler}" if self.exporting else "off") + "}"


class KeepCallerTraceparent(TextMapPropagator):
    """The default propagators, except that a caller's ``traceparent`` of another trace stays.

    A tool adapter puts the run's ``traceparent`` on its request; the ``httpx2``
    instrumentation then injects its client span's context. Inside a run that span belongs to
    the same trace and is the better parent; called outside any span it starts a new trace,
    and the caller's header, naming the trace it belongs to, is kept.
    """

    def __init__(self, inner: TextMapPropagator) -> None:
        self._inner = inner

    def extract(
        self, carrier: CarrierT, context: Context | None = None, getter: Getter[CarrierT] = DG
    ) -> Context:
        """Extract with the wrapped propagator."""
        return self._inner.extract(carrier, context, getter)

    def inject(
        self, carrier: CarrierT, context: Context | None = None, setter: Setter[CarrierT] = DS
    ) -> None:
        """Inject with the wrapped propagator, then restore a caller's header of another trace."""
        existing = carrier.get("traceparent") if isinstance(carrier, Mapping) else None
        self._inner.inject(carrier, context, setter)
        if not isinstance(existing, str) or existing.count("-") != 3:
            return
        span = trace.get_current_span(context).get_span_context()
        if not span.is_valid or format_trace_id(span.trace_id) != existing.split("-")[1]:
            setter.set(carrier, "traceparent", existing)

    @property
    def fields(self) -> set[str]:
        """The fields of the wrapped propagator."""
        return self._inner.fields
