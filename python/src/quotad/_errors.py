"""The client's errors. Every one is a :class:`QuotadError`; only :class:`Unavailable` is retried."""

from __future__ import annotations

from typing import Callable, Optional

import grpc

from quotad._types import Decision


class QuotadError(Exception):
    """Anything the client raises."""


class Denied(QuotadError):
    """quotad (or the local fallback limiter) denied beyond the retry policy."""

    def __init__(
        self,
        resource: str,
        decision: Decision,
        retry_after: float,
        denied_by: str,
        rule: str = "",
        config_version: int = 0,
    ) -> None:
        why = f" (rule {rule}, config version {config_version})" if rule else ""
        super().__init__(f"{resource}: {decision.value} by {denied_by}; retry after {retry_after:.3f} s{why}")
        self.resource = resource
        self.decision = decision
        self.retry_after = retry_after
        self.denied_by = denied_by
        #: The rule that decided (a glob rule's pattern) and the config version in force ("" and 0 locally).
        self.rule = rule
        self.config_version = config_version


class Unavailable(QuotadError):
    """quotad could not be reached (or is shutting down, or its store is down): retried with backoff."""


class InvalidRequest(QuotadError):
    """The request is malformed (INVALID_ARGUMENT; the message names the field): never retried."""


class NotFound(QuotadError):
    """The resource is not configured (NOT_FOUND): never retried."""


class FailedPrecondition(QuotadError):
    """The request can never succeed as asked (FAILED_PRECONDITION): never retried."""


class PermissionDenied(QuotadError):
    """The caller is not authenticated, or not allowed this call or lease: never retried."""


class Throttled(Exception):
    """Raise this from code under a permit to say "the downstream throttled me" when no classifier would
    recognise your error: the permit is released THROTTLED and the throttle reported with ``retry_after``."""

    def __init__(self, message: str = "throttled", retry_after: Optional[float] = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


_RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.UNKNOWN,
}


def from_rpc_error(e: grpc.RpcError) -> QuotadError:
    """Maps a gRPC status to the client's error (the same mapping as the Rust client)."""
    # Sync errors are grpc.Call, asyncio ones grpc.aio.AioRpcError: both have code() and details().
    get_code: Callable[[], object] = getattr(e, "code", lambda: None)
    get_details: Callable[[], object] = getattr(e, "details", lambda: None)
    raw = get_code()
    code = raw if isinstance(raw, grpc.StatusCode) else grpc.StatusCode.UNKNOWN
    text = get_details()
    details = text if isinstance(text, str) and text else code.name
    if code in _RETRYABLE:
        return Unavailable(details)
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
        return InvalidRequest(details)
    if code is grpc.StatusCode.NOT_FOUND:
        return NotFound(details)
    if code is grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPrecondition(details)
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        return PermissionDenied(details)
    return QuotadError(f"quotad error {code.name}: {details}")
