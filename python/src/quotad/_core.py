"""What the sync and asyncio clients share: building requests, and the retry decisions of one logical
call, written once. Each client only runs the steps (blocking or awaiting) and sleeps where told."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Generator, Mapping, Optional, Tuple, TypeVar, Union, cast

from quotad import classify as cls
from quotad._errors import Denied, QuotadError, Unavailable
from quotad._types import Decision, Outcome, Progress, to_duration
from quotad.fallback import FAIL_CLOSED, FAIL_OPEN, LocalLimiters, LocalLimits, LocalSlot, Unreachable, check_unreachable
from quotad.retry import Backoff, RetryBudget, RetryPolicy
from quotad.v1 import quota_pb2 as pb

log = logging.getLogger("quotad")

ProgressHook = Callable[[Progress], None]

#: gRPC channel options: reconnect quickly after quotad restarts (gRPC's default backoff grows to 2 min, and
#: calls fail at once while it waits), and leave retrying to this client's policy.
CHANNEL_OPTIONS: Tuple[Tuple[str, int], ...] = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_retries", 0),
)


@dataclass
class Settings:
    """Fixed when a client is made."""

    client_id: str
    call_timeout: float
    default_lease_ttl: Optional[float]
    policy: RetryPolicy
    budget: RetryBudget
    unreachable: Unreachable
    on_progress: Optional[ProgressHook]
    classify: cls.Classifier

    @classmethod
    def make(
        cls_,
        client_id: Optional[str],
        call_timeout: float,
        default_lease_ttl: Optional[float],
        retry: Optional[RetryPolicy],
        retry_budget: Optional[RetryBudget],
        on_unreachable: Unreachable,
        classify: Optional[cls.Classifier],
        on_progress: Optional[ProgressHook],
    ) -> "Settings":
        """A client's settings from its constructor's arguments, checked (both clients take the same)."""
        timeout = check_seconds("call_timeout", call_timeout)
        if not timeout:
            raise ValueError("call_timeout must be positive")
        return cls_(
            client_id=client_id or default_client_id(),
            call_timeout=timeout,
            default_lease_ttl=check_seconds("default_lease_ttl", default_lease_ttl),
            policy=retry or RetryPolicy(),
            budget=retry_budget or RetryBudget(),
            unreachable=check_unreachable(on_unreachable),
            on_progress=on_progress,
            classify=classify or cls.default_classifier,
        )


@dataclass
class Counters:
    """Permits granted without quotad, thread-safe."""

    fail_open: int = 0
    local: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _warned: Dict[str, float] = field(default_factory=dict)

    def count(self, which: str, resource: str, error: QuotadError) -> None:
        with self._lock:
            setattr(self, which, getattr(self, which) + 1)
            total = getattr(self, which)
            now = time.monotonic()
            due = now - self._warned.get(resource, -1e9) >= 10.0
            if due:
                self._warned[resource] = now
        if due:
            # Rate-limited: one line per resource per 10 s, with the running total.
            log.warning("quotad unreachable (%s): %s grant on %s, %d so far", error, which, resource, total)


def default_client_id() -> str:
    return f"python-{os.uname().nodename if hasattr(os, 'uname') else 'host'}-{os.getpid()}"


def new_request_id() -> str:
    return uuid.uuid4().hex


def check_seconds(name: str, value: Optional[float]) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, not {value!r}")
    return float(value)


def descriptors_of(descriptors: Optional[Mapping[str, str]], extra: Mapping[str, str]) -> Dict[str, str]:
    out: Dict[str, str] = dict(descriptors or {})
    out.update(extra)
    for k, v in out.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f"descriptor {k!r}: keys and values must be str, not {type(v).__name__}")
    return out


def acquire_request(
    s: Settings,
    resource: str,
    permits: int,
    descriptors: Dict[str, str],
    lease_ttl: Optional[float],
    max_wait: Optional[float],
    ids: Tuple[Optional[str], Optional[str]],
) -> pb.AcquireRequest:
    """The request for one logical acquire; ``ids`` is its request_id (None: a fresh one) and priority class
    (None: the resource's default)."""
    request_id, priority = ids
    if not isinstance(resource, str) or not resource:
        raise ValueError("resource must be a non-empty str")
    if isinstance(permits, bool) or not isinstance(permits, int) or permits < 1:
        raise ValueError(f"permits must be an int >= 1, not {permits!r}")
    req = pb.AcquireRequest(
        resource=resource,
        descriptors=descriptors,
        permits=permits,
        # One id for every retry of this logical acquire: a lost reply is replayed, never charged twice.
        request_id=request_id or new_request_id(),
        client_id=s.client_id,
    )
    if priority is not None:
        if not isinstance(priority, str):
            raise TypeError(f"priority must be a str naming one of the resource's classes, not {priority!r}")
        req.priority = priority
    ttl = check_seconds("lease_ttl", lease_ttl)
    ttl = ttl if ttl is not None else s.default_lease_ttl
    if ttl is not None:
        req.lease_ttl.CopyFrom(to_duration(ttl))
    wait = check_seconds("max_wait", max_wait)
    if wait:
        req.max_wait.CopyFrom(to_duration(wait))
    return req


class Tries:
    """Where a logical call stands in its policy: attempts and the deadline count across the whole call (for
    ``run``: its acquires and its throttle retries together), so progress reads "retry 2/5, 3/5, ..."."""

    def __init__(self, policy: RetryPolicy, hook: Optional[ProgressHook], resource: str) -> None:
        self.policy = policy
        self.number = 1
        self.start = time.monotonic()
        self.hook = hook
        self.resource = resource
        self.backoff = Backoff(policy)

    def fits(self, delay: float, extra_deadline: Optional[float] = None) -> bool:
        """True when waiting ``delay`` more stays inside the policy's deadline (and ``extra_deadline``, a
        monotonic instant)."""
        at = time.monotonic() + delay
        if self.policy.deadline is not None and at > self.start + self.policy.deadline:
            return False
        return extra_deadline is None or at <= extra_deadline

    def report(self, event: str, reason: str = "", delay: Optional[float] = None, lease_id: Optional[str] = None) -> None:
        p = Progress(self.resource, self.number, self.policy.max_attempts, event, reason, delay, lease_id)
        if event != "acquired":
            log.debug("%s", p)
        if self.hook is not None:
            try:
                self.hook(p)
            except Exception:  # a broken hook must not break the call
                log.exception("progress hook raised")


@dataclass(frozen=True)
class Wait:
    """Sleep this long, then try again."""

    delay: float


@dataclass(frozen=True)
class GoLocal:
    """quotad is unreachable beyond the policy: follow ``on_unreachable``."""

    error: QuotadError


Step = Union[pb.AcquireResponse, Wait, GoLocal]


def after_acquire(tries: Tries, r: pb.AcquireResponse, resource: str, wait_until: Optional[float]) -> Step:
    """The next step after quotad answered an acquire: the grant itself, a wait, or raise :class:`Denied`."""
    if r.granted:
        tries.report("acquired", lease_id=r.lease_id)
        return r
    decision = Decision.from_wire(r.decision)
    retry_after = r.retry_after.seconds + r.retry_after.nanos / 1e9
    reason = f"{decision.value} by {r.denied_by}"
    delay = tries.backoff.after(retry_after)
    if tries.number >= tries.policy.max_attempts or not tries.fits(delay, wait_until):
        tries.report("gave_up", reason)
        raise Denied(resource, decision, retry_after, r.denied_by, r.rule, r.config_version)
    tries.report("retrying", reason, delay)
    tries.number += 1
    return Wait(delay)


def after_error(tries: Tries, budget: RetryBudget, e: QuotadError, wait_until: Optional[float]) -> Union[Wait, GoLocal]:
    """The next step after an attempt failed: a wait before retrying, or (quotad unreachable beyond the
    policy) :class:`GoLocal`. Anything but :class:`Unavailable` (a bad request) is raised at once."""
    if not isinstance(e, Unavailable):
        raise e
    reason = f"quotad unavailable: {e}"
    delay = tries.backoff.next_delay()
    if tries.number >= tries.policy.max_attempts or not budget.allows_retry() or not tries.fits(delay, wait_until):
        tries.report("gave_up", reason)
        return GoLocal(e)
    tries.report("retrying", reason, delay)
    tries.number += 1
    return Wait(delay)


def retry_idempotent(tries: Tries, budget: RetryBudget, e: QuotadError) -> float:
    """For release, renew, circuit reads: the delay before retrying ``e``, or raise it."""
    if not isinstance(e, Unavailable) or tries.number >= tries.policy.max_attempts or not budget.allows_retry():
        raise e
    delay = tries.backoff.next_delay()
    if not tries.fits(delay):
        raise e
    tries.number += 1
    return delay


def local_grant(
    s: Settings,
    limiters: LocalLimiters,
    counters: Counters,
    resource: str,
    permits: int,
    error: QuotadError,
    wait_until: Optional[float],
    tries: Tries,
) -> Union[Optional[LocalSlot], Wait]:
    """Under ``on_unreachable``: a local grant (None for fail-open, a slot for local limits), a wait for a
    local slot, or raise (fail-closed, or no local slot within the deadline)."""
    policy = s.unreachable
    if policy == FAIL_CLOSED or not (policy == FAIL_OPEN or isinstance(policy, LocalLimits)):
        raise error
    if policy == FAIL_OPEN:
        counters.count("fail_open", resource, error)
        tries.report("acquired")
        return None
    assert isinstance(policy, LocalLimits)
    got = limiters.get(resource, policy).try_acquire(permits)
    if isinstance(got, LocalSlot):
        counters.count("local", resource, error)
        tries.report("acquired")
        return got
    if tries.fits(got, wait_until):
        return Wait(got)
    raise Denied(resource, Decision.LOCALLY_LIMITED, got, "local_fallback")


def exit_meaning(classify: cls.Classifier, exc: Optional[BaseException]) -> Tuple[Outcome, cls.Classification]:
    """How a permit's ``with`` block ended: SUCCESS, FAILURE, or THROTTLED (classified as a throttle)."""
    if exc is None:
        return Outcome.SUCCESS, cls.SUCCESS
    try:
        meaning = classify(exc)
    except Exception:
        log.exception("classifier raised; counting the call as a failure")
        meaning = cls.FAILURE
    return outcome_of(meaning), meaning


def run_meaning(classify: cls.Classifier, value: object) -> cls.Classification:
    try:
        return classify(value)
    except Exception:
        log.exception("classifier raised; counting the call as a failure")
        return cls.FAILURE


def throttle_request(
    s: Settings,
    resource: str,
    retry_after: Optional[float],
    kind: int,
    descriptors: Dict[str, str],
    lease_id: Optional[str],
    message: str,
) -> pb.ReportThrottleRequest:
    req = pb.ReportThrottleRequest(
        resource=resource,
        descriptors=descriptors,
        kind=cast(pb.ThrottleKind, kind),
        lease_id=lease_id or "",
        message=message[:1024],
        client_id=s.client_id,
    )
    ra = check_seconds("retry_after", retry_after)
    if ra is not None:
        req.retry_after.CopyFrom(to_duration(ra))
    return req


def after_throttle(tries: Tries, meaning: cls.Classification) -> Optional[float]:
    """After ``run``'s function was throttled (reported and released): the delay before trying again, or
    None when the policy's attempts or deadline are used up."""
    ra = meaning.retry_after
    delay = tries.backoff.after(ra) if ra is not None else tries.backoff.next_delay()
    reason = f"throttled, retry-after {ra:.1f} s" if ra is not None else "throttled"
    if tries.number >= tries.policy.max_attempts or not tries.fits(delay):
        tries.report("gave_up", reason)
        return None
    tries.report("retrying", reason, delay)
    tries.number += 1
    return delay


@dataclass(frozen=True)
class Released:
    """What a release did: ``released`` is False when the lease was already released, had expired, or was
    unknown (``reason`` says which); settlement refunded or charged tokens; the breaker's state after it."""

    released: bool
    reason: str
    refunded_permits: int
    charged_permits: int
    circuit_state: int


def release_request(lease_id: str, outcome: Outcome, used: Optional[int]) -> pb.ReleaseRequest:
    req = pb.ReleaseRequest(lease_id=lease_id, outcome=outcome.value)
    if used is not None:
        if isinstance(used, bool) or not isinstance(used, int) or used < 0:
            raise ValueError(f"used must be an int >= 0, not {used!r}")
        req.used_permits = used
    return req


def renew_request(lease_id: str, ttl: Optional[float]) -> pb.RenewRequest:
    req = pb.RenewRequest(lease_id=lease_id)
    t = check_seconds("ttl", ttl)
    if t is not None:
        req.lease_ttl.CopyFrom(to_duration(t))
    return req


class PermitState:
    """What both permit kinds hold: the grant's figures, the settlement, and whether it is done."""

    def __init__(self, resource: str, r: Optional[pb.AcquireResponse], slot: Optional[LocalSlot]) -> None:
        from quotad._types import opt_seconds, opt_time

        self.resource = resource
        #: The lease id, or None when granted locally (quotad unreachable: fail-open or local limits).
        self.lease_id: Optional[str] = r.lease_id if r is not None else None
        self.expires_at = opt_time(r, "lease_expires_at") if r is not None else None
        self.ttl = opt_seconds(r, "lease_ttl") if r is not None else None
        self.remaining = r.remaining if r is not None else 0
        self.limit = r.limit if r is not None else 0
        self.replayed = r.replayed if r is not None else False
        #: True when quotad granted it bypassing every limit (a bypass identity or descriptor value).
        self.bypassed = r.bypassed if r is not None else False
        #: True when quotad kept no record of the grant: it holds nothing to give back (a rate-only resource
        #: configured ``settlement = false``, or a grant quotad made ``fail_open``). Release and renew send nothing.
        self.holds_nothing = r.nothing_to_release if r is not None else False
        #: The rule that granted it (the pattern of a glob rule) and the config version in force; "" and 0 locally.
        self.rule = r.rule if r is not None else ""
        self.config_version = r.config_version if r is not None else 0
        self._slot = slot
        self._used: Optional[int] = None
        self._done = False
        self._lock = threading.Lock()

    @property
    def _kept(self) -> Optional[str]:
        """The lease id a release or renewal must send; None when there is nothing to send."""
        return None if self.holds_nothing else self.lease_id

    @property
    def local(self) -> bool:
        """True when granted without quotad (it was unreachable)."""
        return self.lease_id is None

    def settle(self, used: int) -> None:
        """Reserve-then-settle: the cost actually used, sent with the release (less than acquired refunds
        the difference to every rate level, more charges the excess)."""
        if isinstance(used, bool) or not isinstance(used, int) or used < 0:
            raise ValueError(f"used must be an int >= 0, not {used!r}")
        self._used = used

    def _finish(self) -> bool:
        """Marks the permit done; True the first time (so it is released once)."""
        with self._lock:
            if self._done:
                return False
            self._done = True
        if self._slot is not None:
            self._slot.release()
        return True

    def __repr__(self) -> str:
        what = f"lease {self.lease_id}" if self.lease_id else "local"
        return f"<{type(self).__name__} {self.resource} {what}{' released' if self._done else ''}>"


def outcome_of(meaning: cls.Classification) -> Outcome:
    """The release outcome for a classification."""
    if meaning.kind == "success":
        return Outcome.SUCCESS
    return Outcome.THROTTLED if meaning.throttled else Outcome.FAILURE


# -- flows: the clients' retry loops, written once --------------------------------------------------------
#
# A flow is a generator both clients drive: it yields a Send (make this call) or a Wait (sleep this long), is
# sent back the call's answer (or the QuotadError it raised), and returns its result. The sync client drives
# it with blocking calls and time.sleep, the asyncio client with awaits and asyncio.sleep.

R = TypeVar("R")


@dataclass(frozen=True)
class Send:
    """A flow's step: call ``method`` with ``request``, within ``timeout`` seconds (None: the call timeout)."""

    method: str
    request: Any
    timeout: Optional[float] = None


#: A flow returning R.
Flow = Generator[Union[Send, Wait], Any, R]


def idempotent_flow(s: Settings, method: str, request: Any, what: str) -> Flow[Any]:
    """A call that is safe to repeat (Release, Renew, GetCircuitState, ReportThrottle with a lease),
    retried within the policy."""
    tries = Tries(s.policy, None, what)
    while True:
        got = yield Send(method, request)
        if not isinstance(got, QuotadError):
            return got
        yield Wait(retry_idempotent(tries, s.budget, got))


def acquire_flow(
    s: Settings,
    refusal: Callable[[str], Optional[pb.AcquireResponse]],
    local: LocalLimiters,
    counters: Counters,
    tries: Tries,
    resource: str,
    permits: int,
    req: pb.AcquireRequest,
    max_wait: Optional[float],
) -> Flow[Tuple[Optional[pb.AcquireResponse], Optional[LocalSlot]]]:
    """An acquire, retried within the policy: returns quotad's grant, or (quotad unreachable beyond the
    policy) ``(None, slot)`` from ``on_unreachable`` (``slot`` None: fail-open). A watched breaker that is
    OPEN, or a watched pause (``refusal``), answers without a round trip."""
    wait_until = time.monotonic() + max_wait if max_wait else None
    timeout = s.call_timeout + (max_wait or 0.0)
    while True:
        refused = refusal(resource)
        got = refused if refused is not None else (yield Send("Acquire", req, timeout))
        step = (
            after_error(tries, s.budget, got, wait_until)
            if isinstance(got, QuotadError)
            else after_acquire(tries, got, resource, wait_until)
        )
        if isinstance(step, Wait):
            yield step
        elif isinstance(step, GoLocal):
            while True:
                local_step = local_grant(s, local, counters, resource, permits, step.error, wait_until, tries)
                if not isinstance(local_step, Wait):
                    return None, local_step
                yield local_step
        else:
            return step, None


class GetPermit:
    """A run's step: acquire a permit (a new logical acquire, with a fresh request_id); sent back the
    permit."""


class Invoke:
    """A run's step: call the caller's function; sent back ``(True, value)`` or ``(False, exception)``."""


GET_PERMIT, INVOKE = GetPermit(), Invoke()


@dataclass(frozen=True)
class Settle:
    """A run's step: report a throttle (when ``meaning`` says so) and release ``permit`` with ``outcome``."""

    permit: Any
    outcome: Outcome
    meaning: cls.Classification
    exc: Optional[BaseException]


#: A run returning R.
RunFlow = Generator[Union[GetPermit, Invoke, Settle, Wait], Any, R]


def run_flow(tries: Tries, classify: cls.Classifier) -> RunFlow[Any]:
    """``run``'s loop: acquire, call, settle with the outcome the classifier reads from the result or the
    exception; a throttle is reported and retried after the backoff (or the downstream's retry-after)
    while the policy allows. Returns the function's value, or raises its exception (the last throttle's
    once retries run out)."""
    while True:
        permit = yield GET_PERMIT
        ok, got = yield INVOKE
        meaning = run_meaning(classify, got)
        yield Settle(permit, outcome_of(meaning), meaning, None if ok else got)
        delay = after_throttle(tries, meaning) if meaning.throttled else None
        if delay is None:
            if ok:
                return got
            raise got
        yield Wait(delay)
