"""The blocking client: :class:`Client` and its :class:`Permit`. Thread-safe: share one client between
threads. After ``fork`` the child builds its own channel on first use (see the README)."""

from __future__ import annotations

import datetime
import functools
import logging
import os
import queue
import threading
import time
from types import TracebackType
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Type, TypeVar, cast

import grpc

from quotad import _core as core
from quotad import classify as cls
from quotad._channel import ROLES, ChannelOption, Endpoint, Pem, multicallable, role_of
from quotad._errors import QuotadError, Unavailable
from quotad._local import Attempts, Known, WatchFlow, watch_request
from quotad._trace import metadata as trace_metadata
from quotad._types import CircuitStatus, Outcome, ThrottleKind, ThrottleReport, opt_time
from quotad.fallback import FAIL_CLOSED, LocalLimiters, LocalSlot, Unreachable
from quotad.retry import RetryBudget, RetryPolicy
from quotad.v1 import quota_pb2 as pb

log = logging.getLogger("quotad")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

class Permit(core.PermitState):
    """A granted permit. As a context manager it is released on exit: SUCCESS, FAILURE when the block
    raises, THROTTLED (and the throttle reported with the downstream's retry-after) when the exception is
    classified as a throttle. Released at most once; a permit dropped unreleased is released UNKNOWN in the
    background rather than holding its slot until the TTL."""

    def __init__(self, client: "Client", resource: str, r: Optional[pb.AcquireResponse], slot: Optional[LocalSlot]) -> None:
        super().__init__(resource, r, slot)
        self._client = client
        self._renewer: Optional[threading.Event] = None

    def __enter__(self) -> "Permit":
        return self

    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        if exc is not None and not isinstance(exc, Exception):
            self.release(Outcome.UNKNOWN)  # KeyboardInterrupt, SystemExit: the call's fate is unknown
            return
        outcome, meaning = core.exit_meaning(self._client._s.classify, exc)
        self._client._settle(self, outcome, meaning, exc)

    def release(self, outcome: Outcome = Outcome.SUCCESS, used: Optional[int] = None) -> Optional[core.Released]:
        """Releases with ``outcome`` (and the settled cost, from ``used`` or :meth:`settle`). None when the
        permit was already released, was granted locally or holds nothing (see ``holds_nothing``)."""
        if not self._finish():
            return None
        self._stop_renewing()
        lease_id = self._kept
        if lease_id is None:
            return None
        return self._client.release(lease_id, outcome, used if used is not None else self._used)

    def renew(self, ttl: Optional[float] = None) -> Optional[datetime.datetime]:
        """Extends the lease by its TTL (or ``ttl`` seconds); returns the new expiry."""
        lease_id = self._kept
        if lease_id is None:
            return None
        self.expires_at = self._client.renew(lease_id, ttl if ttl is not None else self.ttl)
        return self.expires_at

    def start_auto_renew(self, every: Optional[float] = None) -> None:
        """Renews on a background thread every ``every`` seconds (default: half the TTL) until released; stops
        by itself if a renewal is refused (the lease expired)."""
        if self._kept is None or self._renewer is not None or self._done:
            return
        period = every if every is not None else max((self.ttl or 60.0) / 2, 0.01)
        stop = self._renewer = threading.Event()

        def loop() -> None:
            while not stop.wait(period):
                try:
                    self.renew()
                except Unavailable as e:
                    log.warning("auto-renew of %s failed; will retry: %s", self.lease_id, e)
                except QuotadError as e:
                    log.warning("auto-renew of %s stopped: %s", self.lease_id, e)
                    return

        threading.Thread(target=loop, name=f"quotad-renew-{self.lease_id}", daemon=True).start()

    def _stop_renewing(self) -> None:
        if self._renewer is not None:
            self._renewer.set()

    def __del__(self) -> None:
        # (A permit whose construction failed has no `_done`: nothing to release.)
        if not getattr(self, "_done", True) and self._kept is not None:
            self._stop_renewing()
            self._client._release_later(self._kept)


class Client:
    """A quotad client: acquire permits, report throttles, read breakers, every call wrapped in retries with
    jitter. Lazy: nothing connects until the first call (cheap to build at import time, e.g. on Lambda).

    ``target`` is host:port. TLS: ``ca`` (PEM bytes or a path), plus ``cert`` and ``key`` for mTLS, and
    ``server_name`` when the certificate's name is not the target's host; ``token`` is sent as
    ``authorization: Bearer`` (TLS only). ``call_timeout`` bounds each attempt (seconds); ``retry`` and
    ``retry_budget`` shape retries; ``on_unreachable`` is "fail_closed", "fail_open" or
    :class:`~quotad.LocalLimits`; ``classify`` decides what a downstream's answer means (default:
    :func:`quotad.classify.default_classifier`); ``on_progress`` sees every attempt and delay."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        client_id: Optional[str] = None,
        token: Optional[str] = None,
        ca: Optional[Pem] = None,
        cert: Optional[Pem] = None,
        key: Optional[Pem] = None,
        server_name: Optional[str] = None,
        call_timeout: float = 5.0,
        default_lease_ttl: Optional[float] = None,
        retry: Optional[RetryPolicy] = None,
        retry_budget: Optional[RetryBudget] = None,
        on_unreachable: Unreachable = FAIL_CLOSED,
        classify: Optional[cls.Classifier] = None,
        on_progress: Optional[core.ProgressHook] = None,
        channel_options: Sequence[ChannelOption] = (),
    ) -> None:
        self._s = core.Settings.make(
            client_id, call_timeout, default_lease_ttl, retry, retry_budget, on_unreachable, classify, on_progress
        )
        self._endpoint = Endpoint.make(target, ca, cert, key, token, server_name, channel_options)
        self._local = LocalLimiters()
        self._known = Known()
        self._attempts = Attempts(self._s.budget, self._known)
        self._counters = core.Counters()
        self._lock = threading.Lock()
        self._pid = -1
        self._channels: Dict[str, grpc.Channel] = {}
        self._calls: Dict[str, Any] = {}
        self._later: Optional["queue.Queue[Optional[str]]"] = None
        self._watches: Set["Watch"] = set()

    # -- plumbing ---------------------------------------------------------------------------------------

    def _call(self, method: str) -> Any:
        """The method's multi-callable on this process's channel (rebuilt after fork)."""
        with self._lock:
            if self._pid != os.getpid() or not self._channels:
                # After fork the parent's channels are unusable here: new ones, left unclosed for the parent.
                self._channels = {role: self._endpoint.sync_channel(role) for role in ROLES}
                self._pid = os.getpid()
                self._calls = {}
            found = self._calls.get(method)
            if found is None:
                found = self._calls[method] = multicallable(self._channels[role_of(method)], method)
            return found

    def _once(self, method: str, request: Any, timeout: Optional[float] = None) -> Any:
        """One attempt, bounded by the call timeout, counted by the retry budget. While quotad was found
        unreachable a moment ago, fails at once without calling (see quotad._local)."""
        self._attempts.before()
        try:
            r = self._call(method)(
                request, timeout=timeout or self._s.call_timeout, metadata=trace_metadata()
            )
        except grpc.RpcError as e:
            raise self._attempts.failed(e) from None
        self._attempts.succeeded()
        return r

    def _drive(self, flow: "core.Flow[T]") -> T:
        """Runs a flow (see quotad._core): its calls on this thread, its waits with time.sleep."""
        got: Any = None
        while True:
            try:
                step = flow.send(got)
            except StopIteration as done:
                return cast(T, done.value)
            if isinstance(step, core.Wait):
                time.sleep(step.delay)
                got = None
                continue
            try:
                got = self._once(step.method, step.request, step.timeout)
            except QuotadError as e:
                got = e

    def _idempotent(self, method: str, request: Any, what: str) -> Any:
        return self._drive(core.idempotent_flow(self._s, method, request, what))

    def _release_later(self, lease_id: str) -> None:
        """Releases a dropped permit's lease UNKNOWN on a background thread."""
        with self._lock:
            if self._later is None:
                self._later = queue.Queue()
                threading.Thread(target=self._releaser, args=(self._later,), name="quotad-release", daemon=True).start()
            self._later.put(lease_id)

    def _releaser(self, q: "queue.Queue[Optional[str]]") -> None:
        while True:
            lease_id = q.get()
            if lease_id is None:
                return
            try:
                self.release(lease_id, Outcome.UNKNOWN)
            except QuotadError as e:
                log.warning("background release of dropped permit %s failed: %s", lease_id, e)

    def close(self) -> None:
        """Ends the client's watches and closes the channels (permits still held expire at their TTL)."""
        # First, and outside the lock: a watch still running would open new channels after the close.
        for watch in list(self._watches):
            watch.stop()
        with self._lock:
            channels, self._channels, self._calls = self._channels, {}, {}
            if self._later is not None:
                self._later.put(None)
                self._later = None
        for channel in channels.values():
            channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def fail_open_count(self) -> int:
        """Permits granted without quotad (fail-open) so far."""
        return self._counters.fail_open

    @property
    def local_fallback_count(self) -> int:
        """Permits granted by the local fallback limiter so far."""
        return self._counters.local

    # -- the API ----------------------------------------------------------------------------------------

    def acquire(
        self,
        resource: str,
        *,
        permits: int = 1,
        descriptors: Optional[Mapping[str, str]] = None,
        lease_ttl: Optional[float] = None,
        max_wait: Optional[float] = None,
        request_id: Optional[str] = None,
        priority: Optional[str] = None,
        auto_renew: bool = False,
        retry: Optional[RetryPolicy] = None,
        on_progress: Optional[core.ProgressHook] = None,
        **descriptor_values: str,
    ) -> Permit:
        """Acquires a permit on ``resource``, waiting out denials (at least the server's ``retry_after``, plus
        jitter) and retrying transport errors with the same ``request_id``, within the retry policy. Extra
        keyword arguments are descriptors (``tenant="acme"``); ``priority`` names the request's class, one of the
        resource's ``priority.classes`` (None: its default class). Raises :class:`~quotad.Denied` beyond the
        policy; when quotad is unreachable, follows ``on_unreachable``."""
        tries = core.Tries(retry or self._s.policy, on_progress or self._s.on_progress, resource)
        d = core.descriptors_of(descriptors, descriptor_values)
        return self._acquire(resource, permits, d, lease_ttl, max_wait, (request_id, priority), auto_renew, tries)

    def _acquire(
        self,
        resource: str,
        permits: int,
        descriptors: Dict[str, str],
        lease_ttl: Optional[float],
        max_wait: Optional[float],
        ids: Tuple[Optional[str], Optional[str]],
        auto_renew: bool,
        tries: core.Tries,
    ) -> Permit:
        req = core.acquire_request(self._s, resource, permits, descriptors, lease_ttl, max_wait, ids)
        flow = core.acquire_flow(
            self._s, self._known.refusal, self._local, self._counters, tries, resource, permits, req, max_wait
        )
        granted, slot = self._drive(flow)
        permit = Permit(self, resource, granted, slot)
        if granted is not None and auto_renew:
            permit.start_auto_renew()
        return permit

    def release(self, lease_id: str, outcome: Outcome = Outcome.SUCCESS, used: Optional[int] = None) -> core.Released:
        """Releases a lease by id (idempotent, retried). Prefer the permit's context manager."""
        r = self._idempotent("Release", core.release_request(lease_id, outcome, used), lease_id)
        return core.Released(r.released, r.reason, r.refunded_permits, r.charged_permits, r.circuit_state)

    def renew(self, lease_id: str, ttl: Optional[float] = None) -> Optional[datetime.datetime]:
        """Extends a live lease by ``ttl`` seconds (default: the resource's); returns the new expiry."""
        r = self._idempotent("Renew", core.renew_request(lease_id, ttl), lease_id)
        return opt_time(r, "lease_expires_at")

    def report_throttle(
        self,
        resource: str,
        retry_after: Optional[float] = None,
        *,
        kind: ThrottleKind = ThrottleKind.THROTTLED,
        descriptors: Optional[Mapping[str, str]] = None,
        lease_id: Optional[str] = None,
        message: str = "",
    ) -> ThrottleReport:
        """Tells quotad the downstream throttled (or failed) a call, so the whole fleet backs off: a breaker
        failure, a lower adaptive rate (THROTTLED), and a fleet-wide pause until ``retry_after`` seconds.
        With ``lease_id`` the failure is counted once and the report is retried safely; without, it is sent
        once (a retry after a lost reply could count it twice)."""
        d = core.descriptors_of(descriptors, {})
        req = core.throttle_request(self._s, resource, retry_after, kind.value, d, lease_id, message)
        if lease_id:
            r = self._idempotent("ReportThrottle", req, resource)
        else:
            r = self._once("ReportThrottle", req)
        return ThrottleReport.from_wire(r)

    def circuit_state(self, resource: str, descriptors: Optional[Mapping[str, str]] = None) -> CircuitStatus:
        """The resource's shared circuit breaker, adaptive rate and pause."""
        req = pb.GetCircuitStateRequest(resource=resource, descriptors=core.descriptors_of(descriptors, {}))
        return CircuitStatus.from_wire(self._idempotent("GetCircuitState", req, resource))

    def watch(self, resources: Iterable[str]) -> "Watch":
        """Follows ``resources``' breakers and pauses (quotad's ``WatchCircuitState``, 1 to 64 names), so that
        while one is OPEN or paused :meth:`acquire` refuses it locally, without a round trip. Runs on a
        background thread and watches again by itself when the stream breaks (forgetting what it said
        meanwhile); ends with :meth:`Watch.stop` or its ``with`` block."""
        names, req = watch_request(resources)
        return Watch(self, names, req)

    def run(
        self,
        resource: str,
        fn: Callable[[], T],
        *,
        classify: Optional[cls.Classifier] = None,
        permits: int = 1,
        descriptors: Optional[Mapping[str, str]] = None,
        lease_ttl: Optional[float] = None,
        max_wait: Optional[float] = None,
        priority: Optional[str] = None,
        retry: Optional[RetryPolicy] = None,
        on_progress: Optional[core.ProgressHook] = None,
        **descriptor_values: str,
    ) -> T:
        """Runs ``fn()`` under a permit: acquire, call, release with the outcome; when ``classify`` (default:
        :func:`~quotad.classify.default_classifier`) calls the result or exception a throttle, report it
        with the downstream's retry-after, release THROTTLED and retry with backoff within the policy.
        Returns ``fn``'s result, or raises its exception (the last throttle's once retries run out)."""
        tries = core.Tries(retry or self._s.policy, on_progress or self._s.on_progress, resource)
        d = core.descriptors_of(descriptors, descriptor_values)
        flow = core.run_flow(tries, classify or self._s.classify)
        got: Any = None
        permit: Optional[Permit] = None
        while True:
            try:
                step = flow.send(got)
            except StopIteration as done:
                return cast(T, done.value)
            got = None
            if step is core.GET_PERMIT:
                permit = got = self._acquire(resource, permits, d, lease_ttl, max_wait, (None, priority), False, tries)
            elif step is core.INVOKE:
                try:
                    got = (True, fn())
                except Exception as e:
                    got = (False, e)
                except BaseException:
                    if permit is not None:
                        permit.release(Outcome.UNKNOWN)
                    raise
            elif isinstance(step, core.Settle):
                self._settle(step.permit, step.outcome, step.meaning, step.exc)
            elif isinstance(step, core.Wait):
                time.sleep(step.delay)

    def _settle(
        self, permit: Permit, outcome: Outcome, meaning: cls.Classification, exc: Optional[BaseException]
    ) -> None:
        """Reports a throttle (with the lease, so it counts once) and releases; failures here are logged,
        not raised: the caller's own result matters more, and the lease expires at its TTL."""
        if meaning.throttled and permit.lease_id is not None:
            message = str(exc)[:1024] if exc is not None else "throttled"
            try:
                self.report_throttle(permit.resource, meaning.retry_after, lease_id=permit.lease_id, message=message)
            except QuotadError as e:
                log.warning("could not report a throttle on %s to quotad: %s", permit.resource, e)
        try:
            permit.release(outcome)
        except QuotadError as e:
            log.warning("release of %s failed: %s", permit.lease_id, e)

    def limited(self, resource: str, **options: Any) -> Callable[[F], F]:
        """A decorator: every call of the function runs under :meth:`run` with ``options``.

        ``@client.limited("bedrock.invoke", tenant="acme")``"""

        def wrap(fn: F) -> F:
            @functools.wraps(fn)
            def limited_call(*args: Any, **kwargs: Any) -> Any:
                return self.run(resource, lambda: fn(*args, **kwargs), **options)

            return cast(F, limited_call)

        return wrap


class Watch:
    """A running watch (:meth:`Client.watch`). :meth:`stop`, or leaving its ``with`` block, ends it and
    forgets what it learnt."""

    def __init__(self, client: Client, resources: List[str], request: pb.WatchCircuitStateRequest) -> None:
        self.resources = resources
        self._client = client
        self._request = request
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._stream: Optional[Any] = None
        self._thread = threading.Thread(target=self._follow, name="quotad-watch", daemon=True)
        client._watches.add(self)
        self._thread.start()

    def _follow(self) -> None:
        flow = WatchFlow(self._client._known, self.resources)
        while not self._stopped.is_set():
            error: Optional[grpc.RpcError] = None
            try:
                with self._lock:
                    if self._stopped.is_set():
                        break
                    stream = self._stream = self._client._call("WatchCircuitState")(self._request)
                for event in stream:
                    flow.seen(event)
            except grpc.RpcError as e:
                if not self._stopped.is_set():
                    error = e
            self._stopped.wait(flow.ended(error))
        flow.stopped()

    def stop(self) -> None:
        """Ends the watch (waits up to 5 s for its thread) and forgets what it learnt."""
        with self._lock:
            self._stopped.set()
            if self._stream is not None:
                self._stream.cancel()
        if threading.current_thread() is not self._thread:
            self._thread.join(5.0)
        self._client._known.forget(self.resources)
        self._client._watches.discard(self)

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
