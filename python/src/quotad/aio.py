"""The asyncio client: :class:`AsyncClient`, the same surface as :class:`quotad.Client` with ``await``.

``permit = await client.acquire(...)`` or ``async with client.acquire(...) as permit:``."""

from __future__ import annotations

import asyncio
import datetime
import functools
import logging
import time
from types import TracebackType
from typing import (
    Any,
    Awaitable,
    Callable,
    Dict,
    Generator,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    Type,
    TypeVar,
    cast,
)

import grpc

from quotad import _core as core
from quotad import classify as cls
from quotad._channel import ROLES, ChannelOption, Endpoint, Pem, multicallable, role_of
from quotad._errors import QuotadError, Unavailable
from quotad._types import CircuitStatus, Outcome, ThrottleKind, ThrottleReport, opt_time
from quotad._local import Attempts, Known, WatchFlow, watch_request
from quotad._trace import metadata as trace_metadata
from quotad.fallback import FAIL_CLOSED, LocalLimiters, LocalSlot, Unreachable
from quotad.retry import RetryBudget, RetryPolicy
from quotad.v1 import quota_pb2 as pb

log = logging.getLogger("quotad")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class AsyncPermit(core.PermitState):
    """A granted permit; see :class:`quotad.Permit`. As an async context manager it is released on exit
    with the block's outcome; auto-renewal runs as a task, cancelled on release."""

    def __init__(self, client: "AsyncClient", resource: str, r: Optional[pb.AcquireResponse], slot: Optional[LocalSlot]) -> None:
        super().__init__(resource, r, slot)
        self._client = client
        self._renewer: Optional["asyncio.Task[None]"] = None

    async def __aenter__(self) -> "AsyncPermit":
        return self

    async def __aexit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        if exc is not None and not isinstance(exc, Exception):
            # Cancelled (or interrupted): the call's fate is unknown; release without waiting on it.
            self._client._release_later(self)
            return
        outcome, meaning = core.exit_meaning(self._client._s.classify, exc)
        await self._client._settle(self, outcome, meaning, exc)

    async def release(self, outcome: Outcome = Outcome.SUCCESS, used: Optional[int] = None) -> Optional[core.Released]:
        """Releases with ``outcome`` (and the settled cost); None if already released, granted locally or holding nothing."""
        if not self._finish():
            return None
        self._stop_renewing()
        lease_id = self._kept
        if lease_id is None:
            return None
        return await self._client.release(lease_id, outcome, used if used is not None else self._used)

    async def renew(self, ttl: Optional[float] = None) -> Optional[datetime.datetime]:
        """Extends the lease by its TTL (or ``ttl`` seconds)."""
        lease_id = self._kept
        if lease_id is None:
            return None
        self.expires_at = await self._client.renew(lease_id, ttl if ttl is not None else self.ttl)
        return self.expires_at

    def start_auto_renew(self, every: Optional[float] = None) -> None:
        """Renews in a task every ``every`` seconds (default half the TTL) until released."""
        if self._kept is None or self._renewer is not None or self._done:
            return
        period = every if every is not None else max((self.ttl or 60.0) / 2, 0.01)

        async def loop() -> None:
            while True:
                await asyncio.sleep(period)
                try:
                    await self.renew()
                except Unavailable as e:
                    log.warning("auto-renew of %s failed; will retry: %s", self.lease_id, e)
                except QuotadError as e:
                    log.warning("auto-renew of %s stopped: %s", self.lease_id, e)
                    return

        self._renewer = asyncio.get_running_loop().create_task(loop())

    def _stop_renewing(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()


class _Acquiring:
    """What :meth:`AsyncClient.acquire` returns: await it for the permit, or use it with ``async with``."""

    def __init__(self, start: Callable[[], Awaitable[AsyncPermit]]) -> None:
        self._start = start
        self._permit: Optional[AsyncPermit] = None

    def __await__(self) -> Generator[Any, None, AsyncPermit]:
        return self._start().__await__()

    async def __aenter__(self) -> AsyncPermit:
        self._permit = await self._start()
        return self._permit

    async def __aexit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        if self._permit is not None:
            await self._permit.__aexit__(exc_type, exc, tb)


class AsyncClient:
    """The asyncio quotad client; the arguments are :class:`quotad.Client`'s. Make it inside the event loop
    that uses it (grpc.aio channels belong to one loop)."""

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
        self._channels: Dict[str, grpc.aio.Channel] = {}
        self._calls: Dict[str, Any] = {}
        self._background: Set["asyncio.Task[Any]"] = set()
        self._watches: Set["AsyncWatch"] = set()

    def _call(self, method: str) -> Any:
        if not self._channels:
            self._channels = {role: self._endpoint.aio_channel(role) for role in ROLES}
            self._calls = {}
        found = self._calls.get(method)
        if found is None:
            found = self._calls[method] = multicallable(self._channels[role_of(method)], method)
        return found

    async def _once(self, method: str, request: Any, timeout: Optional[float] = None) -> Any:
        self._attempts.before()
        try:
            r = await self._call(method)(
                request, timeout=timeout or self._s.call_timeout, metadata=trace_metadata()
            )
        except grpc.RpcError as e:
            raise self._attempts.failed(e) from None
        self._attempts.succeeded()
        return r

    async def _drive(self, flow: "core.Flow[T]") -> T:
        """Runs a flow (see quotad._core): its calls awaited, its waits with asyncio.sleep."""
        got: Any = None
        while True:
            try:
                step = flow.send(got)
            except StopIteration as done:
                return cast(T, done.value)
            if isinstance(step, core.Wait):
                await asyncio.sleep(step.delay)
                got = None
                continue
            try:
                got = await self._once(step.method, step.request, step.timeout)
            except QuotadError as e:
                got = e

    async def _idempotent(self, method: str, request: Any, what: str) -> Any:
        return await self._drive(core.idempotent_flow(self._s, method, request, what))

    def _release_later(self, permit: AsyncPermit) -> None:
        """Releases UNKNOWN in a background task (kept referenced until done)."""
        task = asyncio.get_running_loop().create_task(permit.release(Outcome.UNKNOWN))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """Ends the client's watches, waits for background releases, then closes the channels."""
        watches = list(self._watches)
        for watch in watches:
            watch.stop()
        # Waited for: a watch still running would open new channels after the close.
        await asyncio.gather(*(w._task for w in watches), return_exceptions=True)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        channels, self._channels, self._calls = self._channels, {}, {}
        for channel in channels.values():
            await channel.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def fail_open_count(self) -> int:
        return self._counters.fail_open

    @property
    def local_fallback_count(self) -> int:
        return self._counters.local

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
    ) -> _Acquiring:
        """See :meth:`quotad.Client.acquire`."""
        tries = core.Tries(retry or self._s.policy, on_progress or self._s.on_progress, resource)
        d = core.descriptors_of(descriptors, descriptor_values)
        return _Acquiring(lambda: self._acquire(resource, permits, d, lease_ttl, max_wait, (request_id, priority), auto_renew, tries))

    async def _acquire(
        self,
        resource: str,
        permits: int,
        descriptors: Dict[str, str],
        lease_ttl: Optional[float],
        max_wait: Optional[float],
        ids: Tuple[Optional[str], Optional[str]],
        auto_renew: bool,
        tries: core.Tries,
    ) -> AsyncPermit:
        req = core.acquire_request(self._s, resource, permits, descriptors, lease_ttl, max_wait, ids)
        flow = core.acquire_flow(
            self._s, self._known.refusal, self._local, self._counters, tries, resource, permits, req, max_wait
        )
        granted, slot = await self._drive(flow)
        permit = AsyncPermit(self, resource, granted, slot)
        if granted is not None and auto_renew:
            permit.start_auto_renew()
        return permit

    async def release(self, lease_id: str, outcome: Outcome = Outcome.SUCCESS, used: Optional[int] = None) -> core.Released:
        """Releases a lease by id (idempotent, retried)."""
        r = await self._idempotent("Release", core.release_request(lease_id, outcome, used), lease_id)
        return core.Released(r.released, r.reason, r.refunded_permits, r.charged_permits, r.circuit_state)

    async def renew(self, lease_id: str, ttl: Optional[float] = None) -> Optional[datetime.datetime]:
        r = await self._idempotent("Renew", core.renew_request(lease_id, ttl), lease_id)
        return opt_time(r, "lease_expires_at")

    async def report_throttle(
        self,
        resource: str,
        retry_after: Optional[float] = None,
        *,
        kind: ThrottleKind = ThrottleKind.THROTTLED,
        descriptors: Optional[Mapping[str, str]] = None,
        lease_id: Optional[str] = None,
        message: str = "",
    ) -> ThrottleReport:
        """See :meth:`quotad.Client.report_throttle`."""
        d = core.descriptors_of(descriptors, {})
        req = core.throttle_request(self._s, resource, retry_after, kind.value, d, lease_id, message)
        if lease_id:
            r = await self._idempotent("ReportThrottle", req, resource)
        else:
            r = await self._once("ReportThrottle", req)
        return ThrottleReport.from_wire(r)

    async def circuit_state(self, resource: str, descriptors: Optional[Mapping[str, str]] = None) -> CircuitStatus:
        req = pb.GetCircuitStateRequest(resource=resource, descriptors=core.descriptors_of(descriptors, {}))
        return CircuitStatus.from_wire(await self._idempotent("GetCircuitState", req, resource))

    def watch(self, resources: Iterable[str]) -> "AsyncWatch":
        """See :meth:`quotad.Client.watch`: here the watch is a task on the running loop; it ends with
        :meth:`AsyncWatch.stop` or its ``async with`` block."""
        names, req = watch_request(resources)
        return AsyncWatch(self, names, req)

    async def run(
        self,
        resource: str,
        fn: Callable[[], Awaitable[T]],
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
        """See :meth:`quotad.Client.run`; ``fn`` returns an awaitable (``lambda: session.get(url)``)."""
        tries = core.Tries(retry or self._s.policy, on_progress or self._s.on_progress, resource)
        d = core.descriptors_of(descriptors, descriptor_values)
        flow = core.run_flow(tries, classify or self._s.classify)
        got: Any = None
        permit: Optional[AsyncPermit] = None
        while True:
            try:
                step = flow.send(got)
            except StopIteration as done:
                return cast(T, done.value)
            got = None
            if step is core.GET_PERMIT:
                permit = got = await self._acquire(resource, permits, d, lease_ttl, max_wait, (None, priority), False, tries)
            elif step is core.INVOKE:
                try:
                    got = (True, await fn())
                except Exception as e:
                    got = (False, e)
                except BaseException:
                    if permit is not None:
                        self._release_later(permit)
                    raise
            elif isinstance(step, core.Settle):
                await self._settle(step.permit, step.outcome, step.meaning, step.exc)
            elif isinstance(step, core.Wait):
                await asyncio.sleep(step.delay)

    async def _settle(
        self, permit: AsyncPermit, outcome: Outcome, meaning: cls.Classification, exc: Optional[BaseException]
    ) -> None:
        if meaning.throttled and permit.lease_id is not None:
            message = str(exc)[:1024] if exc is not None else "throttled"
            try:
                await self.report_throttle(permit.resource, meaning.retry_after, lease_id=permit.lease_id, message=message)
            except QuotadError as e:
                log.warning("could not report a throttle on %s to quotad: %s", permit.resource, e)
        try:
            await permit.release(outcome)
        except QuotadError as e:
            log.warning("release of %s failed: %s", permit.lease_id, e)

    def limited(self, resource: str, **options: Any) -> Callable[[F], F]:
        """A decorator for coroutine functions: every call runs under :meth:`run` with ``options``."""

        def wrap(fn: F) -> F:
            @functools.wraps(fn)
            async def limited_call(*args: Any, **kwargs: Any) -> Any:
                return await self.run(resource, lambda: fn(*args, **kwargs), **options)

            return cast(F, limited_call)

        return wrap


class AsyncWatch:
    """A running watch (:meth:`AsyncClient.watch`). :meth:`stop`, or leaving its ``async with`` block, ends
    it and forgets what it learnt."""

    def __init__(self, client: AsyncClient, resources: List[str], request: pb.WatchCircuitStateRequest) -> None:
        self.resources = resources
        self._client = client
        self._request = request
        self._task = asyncio.get_running_loop().create_task(self._follow())
        client._watches.add(self)

    async def _follow(self) -> None:
        flow = WatchFlow(self._client._known, self.resources)
        try:
            while True:
                error: Optional[grpc.RpcError] = None
                try:
                    async for event in self._client._call("WatchCircuitState")(self._request):
                        flow.seen(event)
                except grpc.RpcError as e:
                    error = e
                await asyncio.sleep(flow.ended(error))
        finally:
            flow.stopped()

    def stop(self) -> None:
        """Ends the watch and forgets what it learnt."""
        self._task.cancel()
        self._client._known.forget(self.resources)
        self._client._watches.discard(self)

    async def __aenter__(self) -> "AsyncWatch":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.stop()
