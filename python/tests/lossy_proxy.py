"""A gRPC proxy that forwards every call to quotad and loses a share of the replies: quotad did the work,
the client never hears of it (the case request_id exists for). Bytes pass through untouched."""

from __future__ import annotations

import random
import threading
from concurrent import futures
from typing import Any, Callable, Optional

import grpc


class LossyProxy:
    def __init__(self, upstream: str, drop: float, seed: int = 7) -> None:
        self.drop = drop
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.forwarded = 0
        self.dropped = 0
        self.channel = grpc.insecure_channel(upstream)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        self.server.add_generic_rpc_handlers((_Handler(self),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def forward(self, method: str, request: bytes, context: grpc.ServicerContext) -> bytes:
        call: Callable[..., bytes] = self.channel.unary_unary(method)
        try:
            reply = call(request, timeout=10)
        except grpc.RpcError as e:
            context.abort(e.code(), e.details() or "upstream error")  # type: ignore[attr-defined]
        with self.lock:
            self.forwarded += 1
            lose = self.rng.random() < self.drop
            if lose:
                self.dropped += 1
        if lose:
            context.abort(grpc.StatusCode.UNAVAILABLE, "reply lost by the lossy proxy")
        return reply

    def close(self) -> None:
        self.server.stop(grace=None)
        self.channel.close()


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, proxy: LossyProxy) -> None:
        self.proxy = proxy

    def service(self, details: grpc.HandlerCallDetails) -> Optional[grpc.RpcMethodHandler]:
        method: Any = details.method  # type: ignore[attr-defined]
        return grpc.unary_unary_rpc_method_handler(lambda req, ctx: self.proxy.forward(method, req, ctx))
