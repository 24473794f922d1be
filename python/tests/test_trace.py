"""Trace context from Python: a call made inside an OpenTelemetry span is that span's child in the trace
quotad exports (to a collector of the test's own, speaking OTLP/gRPC)."""

from __future__ import annotations

import asyncio
import signal
import threading
from concurrent import futures
from typing import Iterator, List, Tuple, Union

import grpc
from opentelemetry.sdk.trace import TracerProvider

import quotad
from tests.conftest import Quotad, fresh

Field = Tuple[int, Union[int, bytes]]


def _varint(buf: bytes, i: int) -> Tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7


def fields(buf: bytes) -> Iterator[Field]:
    """Protobuf wire format, one (field number, value) at a time: enough to read spans without the OTLP
    package."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        kind = key & 7
        v: Union[int, bytes]
        if kind == 0:
            v, i = _varint(buf, i)
        elif kind == 1:
            v, i = buf[i : i + 8], i + 8
        elif kind == 2:
            n, i = _varint(buf, i)
            v, i = buf[i : i + n], i + n
        elif kind == 5:
            v, i = buf[i : i + 4], i + 4
        else:
            raise ValueError(f"wire type {kind}")
        yield key >> 3, v


def sub(buf: bytes, number: int) -> Iterator[bytes]:
    for n, v in fields(buf):
        if n == number and isinstance(v, bytes):
            yield v


class Collector:
    """TraceService/Export on a free port: keeps (trace id, span id, parent span id, name) of every span."""

    def __init__(self) -> None:
        self.spans: List[Tuple[bytes, bytes, bytes, str]] = []
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        handler = grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService",
            {"Export": grpc.unary_unary_rpc_method_handler(self._export)},
        )
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _export(self, request: bytes, context: object) -> bytes:
        # ExportTraceServiceRequest.resource_spans(1).scope_spans(2).spans(2)
        for rs in sub(request, 1):
            for ss in sub(rs, 2):
                for span in sub(ss, 2):
                    f = {n: v for n, v in fields(span)}
                    ids = [f.get(k, b"") for k in (1, 2, 4)]
                    name = f.get(5, b"")
                    assert all(isinstance(x, bytes) for x in ids) and isinstance(name, bytes)
                    with self._lock:
                        self.spans.append((bytes(ids[0]), bytes(ids[1]), bytes(ids[2]), name.decode()))
        return b""  # an empty ExportTraceServiceResponse


def test_calls_made_in_a_span_are_its_children_in_quotads_trace() -> None:
    collector = Collector()
    q = Quotad()
    with open(q.config, "a") as f:
        f.write(f'\n[tracing]\notlp_endpoint = "http://127.0.0.1:{collector.port}"\n')
    q.start()
    tracer = TracerProvider().get_tracer("quotad-python-test")
    res = fresh("plain")
    parents = []
    try:
        with quotad.Client(q.target) as client:
            with tracer.start_as_current_span("sync worker") as span:
                client.acquire(res).release()
                parents.append(span.get_span_context())
            client.acquire(res).release()  # outside any span: a trace of quotad's own

        async def main() -> None:
            async with quotad.AsyncClient(q.target) as client:
                with tracer.start_as_current_span("async worker") as span:
                    await (await client.acquire(res)).release()
                    parents.append(span.get_span_context())

        asyncio.run(main())
    finally:
        q.stop(signal.SIGTERM)  # quotad flushes its spans on the way out
        collector.server.stop(None)
    ours = list(collector.spans)
    assert ours, "quotad exported no span"
    for parent in parents:
        trace_id = parent.trace_id.to_bytes(16, "big")
        span_id = parent.span_id.to_bytes(8, "big")
        children = [s for s in ours if s[0] == trace_id and s[2] == span_id]
        # An Acquire and a Release, each a child of the worker's span.
        assert len(children) >= 2, (parent, ours)
    traced = {p.trace_id.to_bytes(16, "big") for p in parents}
    assert any(s[0] not in traced and s[2] == b"" for s in ours), "the untraced call starts its own trace"


def test_no_trace_context_without_a_span() -> None:
    from quotad._trace import metadata

    assert metadata() is None
    with TracerProvider().get_tracer("t").start_as_current_span("s") as span:
        md = dict(metadata() or ())
    assert md["traceparent"].split("-")[1] == f"{span.get_span_context().trace_id:032x}"
    assert set(md) <= {"traceparent", "tracestate"}
