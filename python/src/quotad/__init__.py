"""quotad: central rate limits, concurrency leases and shared circuit breakers for a fleet.

    import quotad

    client = quotad.Client("127.0.0.1:50051")
    with client.acquire("bedrock.invoke", tenant="acme") as permit:
        call_bedrock()  # released SUCCESS; FAILURE if it raises; THROTTLED (and reported) on a 429

See ``Client`` (blocking, thread-safe), ``AsyncClient`` (asyncio), ``RetryPolicy``, ``LocalLimits`` and
``quotad.classify``. The generated protobuf modules are ``quotad.v1.quota_pb2`` and ``quotad.v1.admin_pb2``.
"""

from quotad._core import Released
from quotad._errors import (
    Denied,
    FailedPrecondition,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    QuotadError,
    Throttled,
    Unavailable,
)
from quotad._types import CircuitState, CircuitStatus, Decision, Outcome, Progress, ThrottleKind, ThrottleReport
from quotad.aio import AsyncClient, AsyncPermit, AsyncWatch
from quotad.classify import Classification, default_classifier
from quotad._local import DOWN_FOR
from quotad.client import Client, Permit, Watch
from quotad.fallback import FAIL_CLOSED, FAIL_OPEN, LocalLimits
from quotad.retry import Backoff, Jitter, RetryBudget, RetryPolicy

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AsyncPermit",
    "AsyncWatch",
    "Backoff",
    "CircuitState",
    "CircuitStatus",
    "Classification",
    "Client",
    "DOWN_FOR",
    "Decision",
    "Denied",
    "FAIL_CLOSED",
    "FAIL_OPEN",
    "FailedPrecondition",
    "InvalidRequest",
    "Jitter",
    "LocalLimits",
    "NotFound",
    "Outcome",
    "Permit",
    "PermissionDenied",
    "Progress",
    "QuotadError",
    "Released",
    "RetryBudget",
    "RetryPolicy",
    "ThrottleKind",
    "ThrottleReport",
    "Throttled",
    "Unavailable",
    "Watch",
    "default_classifier",
]
