"""Channel settings shared by both clients: the target, TLS (with a client certificate for mTLS) and a
bearer token."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import grpc

from quotad._core import CHANNEL_OPTIONS
from quotad.v1 import quota_pb2 as pb

Pem = Union[bytes, str, "os.PathLike[str]"]
ChannelOption = Tuple[str, Union[str, int]]


def _pem(value: Optional[Pem], what: str) -> Optional[bytes]:
    """PEM bytes as given, or read from a path."""
    if value is None or isinstance(value, bytes):
        return value
    try:
        with open(value, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"{what}: cannot read {value!r}: {e.strerror}") from None


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect: ``target`` is host:port (``http://`` and ``https://`` prefixes allowed;
    https without ``ca`` uses the system's roots)."""

    target: str
    credentials: Optional[grpc.ChannelCredentials]
    options: Tuple[ChannelOption, ...]

    @classmethod
    def make(
        cls,
        target: str,
        ca: Optional[Pem],
        cert: Optional[Pem],
        key: Optional[Pem],
        token: Optional[str],
        server_name: Optional[str],
        options: Sequence[ChannelOption],
    ) -> "Endpoint":
        tls = ca is not None or cert is not None or target.startswith("https://")
        for prefix in ("http://", "https://"):
            if target.startswith(prefix):
                target = target[len(prefix):]
        target = target.rstrip("/")
        if not target:
            raise ValueError("target must be host:port, e.g. 127.0.0.1:50051")
        if (cert is None) != (key is None):
            raise ValueError("cert and key go together (mTLS needs both)")
        opts: List[ChannelOption] = list(CHANNEL_OPTIONS)
        if server_name:
            opts.append(("grpc.ssl_target_name_override", server_name))
        opts.extend(options)
        if not tls:
            if token:
                raise ValueError(
                    "token needs TLS (pass ca=..., or an https:// target): on plaintext it can be read on the wire"
                )
            return cls(target, None, tuple(opts))
        creds = grpc.ssl_channel_credentials(
            root_certificates=_pem(ca, "ca"),
            private_key=_pem(key, "key"),
            certificate_chain=_pem(cert, "cert"),
        )
        if token:
            creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(token))
        return cls(target, creds, tuple(opts))

    def _options(self, role: str) -> List[ChannelOption]:
        # Each role gets a connection of its own (gRPC would otherwise share one between channels with the
        # same settings): acquires held by the server under max_wait can fill a connection's stream limit,
        # and the releases that would free them must not queue behind them.
        return list(self.options) + [("grpc.use_local_subchannel_pool", 1), ("quotad.channel_role", role)]

    def sync_channel(self, role: str) -> grpc.Channel:
        if self.credentials is None:
            return grpc.insecure_channel(self.target, options=self._options(role))
        return grpc.secure_channel(self.target, self.credentials, options=self._options(role))

    def aio_channel(self, role: str) -> grpc.aio.Channel:
        if self.credentials is None:
            return grpc.aio.insecure_channel(self.target, options=self._options(role))
        return grpc.aio.secure_channel(self.target, self.credentials, options=self._options(role))


#: Acquires go on one connection, everything else on another (see Endpoint).
ROLES = ("acquire", "control")

#: Unary methods: (request, response) messages.
_METHODS: Dict[str, Any] = {
    "Acquire": (pb.AcquireRequest, pb.AcquireResponse),
    "Release": (pb.ReleaseRequest, pb.ReleaseResponse),
    "Renew": (pb.RenewRequest, pb.RenewResponse),
    "ReportThrottle": (pb.ReportThrottleRequest, pb.ReportThrottleResponse),
    "GetCircuitState": (pb.GetCircuitStateRequest, pb.GetCircuitStateResponse),
}

#: Server-streaming methods (on the control connection).
_STREAMS: Dict[str, Any] = {
    "WatchCircuitState": (pb.WatchCircuitStateRequest, pb.CircuitStateEvent),
}


def role_of(method: str) -> str:
    """The connection a method's calls go on."""
    return "acquire" if method == "Acquire" else "control"


def multicallable(channel: Any, method: str) -> Any:
    """The QuotaService method's multi-callable on ``channel`` (a sync or an asyncio channel: both have the
    same factory methods)."""
    req, resp = _STREAMS[method] if method in _STREAMS else _METHODS[method]
    make = channel.unary_stream if method in _STREAMS else channel.unary_unary
    return make(
        f"/quotad.v1.QuotaService/{method}",
        request_serializer=req.SerializeToString,
        response_deserializer=resp.FromString,
    )
