"""The client's plain types: decisions, outcomes, breaker states, and what calls return."""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass
from typing import Dict, Optional

from google.protobuf import duration_pb2, timestamp_pb2

from quotad.v1 import quota_pb2 as pb


class Decision(enum.Enum):
    """Why an acquire was (or was not) granted. ``LOCALLY_LIMITED``: refused by the local fallback limiter
    while quotad was unreachable."""

    UNSPECIFIED = "unspecified"
    GRANTED = "granted"
    RATE_LIMITED = "rate_limited"
    CONCURRENCY_LIMITED = "concurrency_limited"
    CIRCUIT_OPEN = "circuit_open"
    PAUSED = "paused"
    LOCALLY_LIMITED = "locally_limited"

    @classmethod
    def from_wire(cls, value: int) -> "Decision":
        return _DECISIONS.get(value, cls.UNSPECIFIED)


_DECISIONS: Dict[int, Decision] = {
    int(pb.DECISION_GRANTED): Decision.GRANTED,
    int(pb.DECISION_RATE_LIMITED): Decision.RATE_LIMITED,
    int(pb.DECISION_CONCURRENCY_LIMITED): Decision.CONCURRENCY_LIMITED,
    int(pb.DECISION_CIRCUIT_OPEN): Decision.CIRCUIT_OPEN,
    int(pb.DECISION_PAUSED): Decision.PAUSED,
}


class Outcome(enum.Enum):
    """How the downstream call made under a permit ended (feeds the shared circuit breaker)."""

    SUCCESS = pb.OUTCOME_SUCCESS
    FAILURE = pb.OUTCOME_FAILURE
    THROTTLED = pb.OUTCOME_THROTTLED
    UNKNOWN = pb.OUTCOME_UNKNOWN


class ThrottleKind(enum.Enum):
    """What a throttle report reports: THROTTLED lowers the adaptive rate; all count as breaker failures."""

    THROTTLED = pb.THROTTLE_KIND_THROTTLED
    ERROR = pb.THROTTLE_KIND_ERROR
    TIMEOUT = pb.THROTTLE_KIND_TIMEOUT


class CircuitState(enum.Enum):
    """The three states of a circuit breaker."""

    UNSPECIFIED = pb.CIRCUIT_STATE_UNSPECIFIED
    CLOSED = pb.CIRCUIT_STATE_CLOSED
    OPEN = pb.CIRCUIT_STATE_OPEN
    HALF_OPEN = pb.CIRCUIT_STATE_HALF_OPEN

    @classmethod
    def from_wire(cls, value: int) -> "CircuitState":
        try:
            return cls(value)
        except ValueError:
            return cls.UNSPECIFIED


def seconds(d: duration_pb2.Duration) -> float:
    return d.seconds + d.nanos / 1e9


def opt_seconds(msg: object, field: str) -> Optional[float]:
    """A Duration field in seconds, or None when unset."""
    if not msg.HasField(field):  # type: ignore[attr-defined]
        return None
    return seconds(getattr(msg, field))


def opt_time(msg: object, field: str) -> Optional[datetime.datetime]:
    """A Timestamp field as an aware UTC datetime, or None when unset."""
    if not msg.HasField(field):  # type: ignore[attr-defined]
        return None
    ts: timestamp_pb2.Timestamp = getattr(msg, field)
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return epoch + datetime.timedelta(seconds=ts.seconds, microseconds=ts.nanos // 1000)


def to_duration(secs: float) -> duration_pb2.Duration:
    d = duration_pb2.Duration()
    whole = int(secs)
    d.seconds = whole
    d.nanos = int(round((secs - whole) * 1e9))
    if d.nanos >= 1_000_000_000:
        d.seconds += 1
        d.nanos -= 1_000_000_000
    return d


@dataclass(frozen=True)
class CircuitStatus:
    """A resource's shared circuit breaker, adaptive rate and pause, as GetCircuitState answered."""

    resource: str
    state: CircuitState
    since: Optional[datetime.datetime]
    failures: int
    calls: int
    failure_rate: float
    consecutive_failures: int
    half_open_at: Optional[datetime.datetime]
    half_open_after: Optional[float]
    half_open_probes_left: int
    half_open_successes_needed: int
    effective_rate_per_second: float
    configured_rate_per_second: float
    paused_until: Optional[datetime.datetime]
    breaker_configured: bool

    @classmethod
    def from_wire(cls, r: pb.GetCircuitStateResponse) -> "CircuitStatus":
        return cls(
            resource=r.resource,
            state=CircuitState.from_wire(r.state),
            since=opt_time(r, "since"),
            failures=r.failures,
            calls=r.calls,
            failure_rate=r.failure_rate,
            consecutive_failures=r.consecutive_failures,
            half_open_at=opt_time(r, "half_open_at"),
            half_open_after=opt_seconds(r, "half_open_after"),
            half_open_probes_left=r.half_open_probes_left,
            half_open_successes_needed=r.half_open_successes_needed,
            effective_rate_per_second=r.effective_rate_per_second,
            configured_rate_per_second=r.configured_rate_per_second,
            paused_until=opt_time(r, "paused_until"),
            breaker_configured=r.breaker_configured,
        )


@dataclass(frozen=True)
class ThrottleReport:
    """What quotad did with a throttle report: the rate now in force, the breaker, the fleet-wide pause."""

    effective_rate_per_second: float
    configured_rate_per_second: float
    circuit_state: CircuitState
    paused_until: Optional[datetime.datetime]
    pause_remaining: Optional[float]
    rate_decreased: bool

    @classmethod
    def from_wire(cls, r: pb.ReportThrottleResponse) -> "ThrottleReport":
        return cls(
            effective_rate_per_second=r.effective_rate_per_second,
            configured_rate_per_second=r.configured_rate_per_second,
            circuit_state=CircuitState.from_wire(r.circuit_state),
            paused_until=opt_time(r, "paused_until"),
            pause_remaining=opt_seconds(r, "pause_remaining"),
            rate_decreased=r.rate_decreased,
        )


@dataclass(frozen=True)
class Progress:
    """One step of a call's life, for a progress hook: ``event`` is "acquired", "retrying" or "gave_up".
    ``str(progress)`` reads like "bedrock.invoke: retry 2/5 in 3.4 s (rate_limited by tenant=acme)"."""

    resource: str
    attempt: int
    max_attempts: int
    event: str
    reason: str = ""
    delay: Optional[float] = None
    lease_id: Optional[str] = None

    def __str__(self) -> str:
        head = f"{self.resource}: "
        if self.event == "acquired":
            got = f"acquired lease {self.lease_id}" if self.lease_id else "proceeding locally"
            return head + f"attempt {self.attempt}/{self.max_attempts} {got}"
        if self.event == "retrying":
            return head + f"retry {self.attempt + 1}/{self.max_attempts} in {self.delay or 0:.1f} s ({self.reason})"
        return head + f"gave up after {self.attempt} attempts ({self.reason})"
