"""What to do when quotad itself cannot be reached beyond the retry policy (``on_unreachable``):

- ``"fail_closed"`` (the default): raise :class:`quotad.Unavailable`; safest for the downstream.
- ``"fail_open"``: proceed without a lease; safest for your availability. Logged and counted.
- ``LocalLimits(rate=..., concurrency=...)``: proceed within a local token bucket and semaphore per
  resource (Doorman's "safe capacity"), until quotad is back. Set them to your share of the real limit.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Dict, Optional, Union

FAIL_CLOSED = "fail_closed"
FAIL_OPEN = "fail_open"


@dataclass(frozen=True)
class LocalLimits:
    """Safe limits one client may use on its own while quotad is unreachable: ``rate`` tokens per second
    (bursts of ``burst``, default ``max(rate, 1)``) and ``concurrency`` calls in flight."""

    rate: float
    concurrency: int
    burst: Optional[float] = None

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError("LocalLimits.rate must be positive")
        if self.concurrency < 1:
            raise ValueError("LocalLimits.concurrency must be at least 1")
        if self.burst is not None and not self.burst >= 1:
            raise ValueError("LocalLimits.burst must be at least 1")


#: ``on_unreachable``: "fail_closed", "fail_open" or :class:`LocalLimits`.
Unreachable = Union[str, LocalLimits]


def check_unreachable(policy: Unreachable) -> Unreachable:
    if isinstance(policy, LocalLimits) or policy in (FAIL_CLOSED, FAIL_OPEN):
        return policy
    raise ValueError(f"on_unreachable must be 'fail_closed', 'fail_open' or LocalLimits(...), not {policy!r}")


class LocalSlot:
    """A concurrency slot of the local limiter; released once."""

    def __init__(self, limiter: "LocalLimiter") -> None:
        self._limiter: Optional[LocalLimiter] = limiter

    def release(self) -> None:
        limiter, self._limiter = self._limiter, None
        if limiter is not None:
            limiter._free()


class LocalLimiter:
    """A token bucket plus a counted semaphore, thread-safe and never blocking."""

    def __init__(self, limits: LocalLimits) -> None:
        self.limits = limits
        self._burst = limits.burst if limits.burst is not None else max(limits.rate, 1.0)
        self._tokens = self._burst
        self._at = time.monotonic()
        self._in_flight = 0
        self._lock = threading.Lock()

    def try_acquire(self, permits: int) -> Union[LocalSlot, float]:
        """A slot, or how many seconds until one could be had."""
        need = float(max(permits, 1))
        with self._lock:
            if self._in_flight >= self.limits.concurrency:
                return 0.1
            now = time.monotonic()
            self._tokens = min(self._tokens + (now - self._at) * self.limits.rate, self._burst)
            self._at = now
            if self._tokens < need:
                return min((need - self._tokens) / self.limits.rate, 3600.0)
            self._tokens -= need
            self._in_flight += 1
        return LocalSlot(self)

    def _free(self) -> None:
        with self._lock:
            self._in_flight = max(self._in_flight - 1, 0)


class LocalLimiters:
    """One local limiter per resource."""

    def __init__(self) -> None:
        self._by_resource: Dict[str, LocalLimiter] = {}
        self._lock = threading.Lock()

    def get(self, resource: str, limits: LocalLimits) -> LocalLimiter:
        with self._lock:
            found = self._by_resource.get(resource)
            if found is None:
                found = self._by_resource[resource] = LocalLimiter(limits)
            return found
