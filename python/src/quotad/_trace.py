"""W3C trace context on every call, as the Rust client sends it: with OpenTelemetry's API installed
(``pip install 'quotad[otel]'``, or any ``opentelemetry-api`` your service already has) and a span active,
each call to quotad carries that span's ``traceparent`` (and ``tracestate``), so quotad's span for the call is
its child and one trace shows the worker, quotad and the downstream. Without OpenTelemetry, or outside a
span, calls carry nothing extra."""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

Inject = Callable[[Dict[str, str]], None]


def _find() -> Optional[Inject]:
    try:
        from opentelemetry.propagate import inject
    except ImportError:
        return None
    found: Inject = inject
    return found


_INJECT = _find()

#: The headers quotad reads (any others the global propagator writes, e.g. baggage, are not sent).
_HEADERS = ("traceparent", "tracestate")

Metadata = Tuple[Tuple[str, str], ...]


def metadata() -> Optional[Metadata]:
    """The current span's trace context as gRPC metadata, or None."""
    if _INJECT is None:
        return None
    carrier: Dict[str, str] = {}
    try:
        _INJECT(carrier)
    except Exception:  # a broken propagator must not break the call
        return None
    found = tuple((k, carrier[k]) for k in _HEADERS if k in carrier)
    return found or None
