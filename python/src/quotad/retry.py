"""Retrying, done right: the same policy, jitter strategies and retry budget as the Rust client.

With ``b = min(max_backoff, initial_backoff * multiplier ** n)`` for retry ``n`` (from 0), a delay is
``b`` (NONE), ``random(0, b)`` (FULL, the default), ``b/2 + random(0, b/2)`` (EQUAL), or
``min(max_backoff, random(initial_backoff, previous * 3))`` (DECORRELATED), as in the AWS Architecture
Blog's "Exponential Backoff and Jitter". A denial or throttle with a retry-after waits at least that long.
"""

from __future__ import annotations

import enum
import random
import threading
from dataclasses import dataclass
from typing import Optional


class Jitter(enum.Enum):
    """How retry delays are randomised (see the module docs)."""

    NONE = "none"
    FULL = "full"
    EQUAL = "equal"
    DECORRELATED = "decorrelated"


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to retry. Denials, throttles and transport errors all retry under one policy.

    ``max_attempts`` counts the first attempt (1 never retries); times are in seconds; ``deadline`` bounds
    the whole logical call from its first attempt (None: attempts only)."""

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 10.0
    multiplier: float = 2.0
    deadline: Optional[float] = 60.0
    jitter: Jitter = Jitter.FULL

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if not (self.initial_backoff >= 0 and self.max_backoff >= self.initial_backoff):
            raise ValueError("backoffs must satisfy 0 <= initial_backoff <= max_backoff")
        if not self.multiplier >= 1:
            raise ValueError("multiplier must be at least 1")
        if self.deadline is not None and not self.deadline > 0:
            raise ValueError("deadline must be positive (or None)")

    @classmethod
    def no_retries(cls) -> "RetryPolicy":
        return cls(max_attempts=1)

    def bound(self, n: int) -> float:
        """The un-jittered backoff before retry ``n`` (0-based)."""
        try:
            grown = self.initial_backoff * self.multiplier ** min(n, 1000)
        except OverflowError:
            return self.max_backoff
        return min(grown, self.max_backoff)


class Backoff:
    """Successive delays for one logical call under a policy. Pass ``rng`` to make them reproducible."""

    def __init__(self, policy: RetryPolicy, rng: Optional[random.Random] = None) -> None:
        self.policy = policy
        self.retries = 0
        self._previous = policy.initial_backoff
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """The next delay after a failure (a transport error, or a throttle without a retry-after)."""
        p, rng = self.policy, self._rng
        bound = p.bound(self.retries)
        if p.jitter is Jitter.NONE:
            delay = bound
        elif p.jitter is Jitter.FULL:
            delay = rng.uniform(0.0, bound)
        elif p.jitter is Jitter.EQUAL:
            delay = bound / 2 + rng.uniform(0.0, bound / 2)
        else:
            high = max(self._previous * 3, p.initial_backoff)
            delay = min(rng.uniform(p.initial_backoff, high), p.max_backoff)
        self.retries += 1
        self._previous = max(delay, p.initial_backoff)
        return delay

    def after(self, retry_after: float) -> float:
        """The delay when the server (or the downstream) said when to retry: never less than
        ``retry_after``, plus a jittered spread of at most ``max(retry_after, initial_backoff)`` so a fleet
        told the same instant does not come back all at once."""
        retry_after = max(retry_after, 0.0)
        spread = min(self.next_delay(), max(retry_after, self.policy.initial_backoff))
        return retry_after + spread


class RetryBudget:
    """A token bucket in the spirit of gRPC's retry throttling, shared by every call of one client: each
    failed call costs a token, each success refills ``token_ratio``, and retries are allowed only while more
    than half the tokens remain. During an outage a fleet backs off to about one retry per
    ``1 / token_ratio`` successes instead of multiplying its load by ``max_attempts``."""

    def __init__(self, max_tokens: float = 10.0, token_ratio: float = 0.1) -> None:
        self.max_tokens = max(max_tokens, 1.0)
        self.token_ratio = max(token_ratio, 0.0)
        self._tokens = self.max_tokens
        self._lock = threading.Lock()

    def on_success(self) -> None:
        with self._lock:
            self._tokens = min(self._tokens + self.token_ratio, self.max_tokens)

    def on_failure(self) -> None:
        with self._lock:
            self._tokens = max(self._tokens - 1.0, 0.0)

    def allows_retry(self) -> bool:
        with self._lock:
            return self._tokens > self.max_tokens / 2

    @property
    def tokens(self) -> float:
        with self._lock:
            return self._tokens
