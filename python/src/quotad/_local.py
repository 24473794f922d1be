"""Failing fast locally, for both clients (the Rust client's ``watch.rs``). A watch follows resources'
breakers and pauses over quotad's ``WatchCircuitState`` stream; while one is OPEN or paused, ``acquire``
refuses it at once, without a round trip (as a denial: the retry policy then waits it out, still without
calling quotad). And after a call finds quotad unreachable, calls fail at once for a short jittered while
(:data:`DOWN_FOR`), so a thousand callers do not each wait out a connect timeout against a dead server."""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Dict, Iterable, List, Optional, Tuple

import grpc

from quotad._errors import QuotadError, Unavailable, from_rpc_error
from quotad.retry import RetryBudget
from quotad.v1 import quota_pb2 as pb

log = logging.getLogger("quotad")

#: After quotad is found unreachable, calls fail at once for a random time in this range (seconds).
DOWN_FOR: Tuple[float, float] = (0.1, 0.2)

#: A watch that broke is made again after a random time in this range (seconds).
REWATCH: Tuple[float, float] = (0.5, 1.5)

#: quotad watches at most this many resources per stream.
MAX_WATCHED = 64

# How grpc-core (and a proxy in front of quotad) begin the message of a call that never reached quotad or
# lost it: matched at the start only, since an UNAVAILABLE that quotad itself answers (its store is down,
# it is draining) is not "unreachable" and may quote such words later ("quota store unavailable: redis:
# Connection refused"). gRPC's Python API shows no other difference (no metadata on either).
_TRANSPORT = (
    "failed to connect",
    "connections to all backends failing",
    "socket closed",
    "connection reset",
    "connection refused",
    "recvmsg",
    "sendmsg",
    "broken pipe",
    "dns resolution failed",
    "goaway",
    "keepalive",
    "endpoint closing",
    "upstream connect error",
    "no healthy upstream",
)


def unreachable(e: grpc.RpcError) -> bool:
    """True when ``e`` says quotad did not answer: our timeout ran out, or the transport failed."""
    code = getattr(e, "code", lambda: None)()
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return True
    if code is not grpc.StatusCode.UNAVAILABLE:
        return False
    details = getattr(e, "details", lambda: None)()
    text = details.strip().lower() if isinstance(details, str) else ""
    return text.startswith(_TRANSPORT)


def watch_request(resources: Iterable[str]) -> Tuple[List[str], pb.WatchCircuitStateRequest]:
    """The resources of a watch, checked, and the request that watches them."""
    if isinstance(resources, str):
        raise TypeError("resources must be a list of resource names, not one str")
    names = list(resources)
    if not 1 <= len(names) <= MAX_WATCHED:
        raise ValueError(f"resources: watch 1 to {MAX_WATCHED} resources, not {len(names)}")
    for r in names:
        if not isinstance(r, str) or not r:
            raise ValueError(f"resources: each must be a non-empty str, not {r!r}")
    req = pb.WatchCircuitStateRequest(resources=[pb.GetCircuitStateRequest(resource=r) for r in names])
    return names, req


#: A watch refused with one of these will be refused again until the config or the caller's rights change:
#: said once at WARNING (a misspelt name would otherwise never refuse anything, silently), then retried.
_REFUSED = (
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
)


class WatchLog:
    """How one watch's breaks are logged: the first refusal (``_REFUSED``) at WARNING, the rest at DEBUG."""

    def __init__(self, resources: List[str]) -> None:
        self.resources = resources
        self._warned = False

    def broke(self, e: grpc.RpcError) -> None:
        code = getattr(e, "code", lambda: None)()
        why = f"{getattr(code, 'name', code)}: {getattr(e, 'details', lambda: '')()}"
        if code in _REFUSED and not self._warned:
            self._warned = True
            log.warning("quotad refused to watch %s (retrying every second or so): %s", self.resources, why)
        else:
            log.debug("circuit-state watch of %s broke; watching again: %s", self.resources, why)


class Attempts:
    """What one attempt's end means to a client, written once for both: a transport failure costs the
    retry budget, quotad found unreachable is not called again for a moment (``Known``), and a success puts
    both back."""

    def __init__(self, budget: RetryBudget, known: "Known") -> None:
        self._budget = budget
        self._known = known

    def before(self) -> None:
        """Raises at once while quotad was found unreachable a moment ago."""
        not_trying = self._known.not_trying()
        if not_trying is not None:
            raise not_trying

    def failed(self, e: grpc.RpcError) -> QuotadError:
        """The error to raise for a failed attempt."""
        err = from_rpc_error(e)
        if isinstance(err, Unavailable):
            self._budget.on_failure()
        if unreachable(e):
            self._known.mark_down()
        return err

    def succeeded(self) -> None:
        self._budget.on_success()
        self._known.mark_up()


def rewatch_delay() -> float:
    return random.uniform(*REWATCH)


class WatchFlow:
    """One watch's loop, written once for both clients: each stream's events update what the client knows;
    when a stream ends or breaks, what it said may be stale, so it is forgotten and the watch opens a new
    stream after a short random delay. The sync client drives it from a thread, the asyncio one from a task."""

    def __init__(self, known: "Known", resources: List[str]) -> None:
        self.known = known
        self.resources = resources
        self._log = WatchLog(resources)

    def seen(self, event: pb.CircuitStateEvent) -> None:
        """One event of the stream."""
        if event.HasField("state"):
            self.known.update(event.state)

    def ended(self, error: Optional[grpc.RpcError]) -> float:
        """The stream ended (``error``: how it broke, if it did); returns how long to wait before watching
        again."""
        if error is not None:
            self._log.broke(error)
        self.known.forget(self.resources)
        return rewatch_delay()

    def stopped(self) -> None:
        """The watch is over: forget what it said."""
        self.known.forget(self.resources)


class Known:
    """What the client knows without asking quotad. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # resource -> (open until, paused until), monotonic seconds.
        self._watched: Dict[str, Tuple[Optional[float], Optional[float]]] = {}
        self._down_until: Optional[float] = None

    def refusal(self, resource: str) -> Optional[pb.AcquireResponse]:
        """A denial to answer locally for ``resource``, if its watched breaker is OPEN or it is paused."""
        with self._lock:
            found = self._watched.get(resource)
        if found is None:
            return None
        now = time.monotonic()
        open_until, paused_until = found
        if paused_until is not None and paused_until > now:
            decision, left, by = pb.DECISION_PAUSED, paused_until - now, "pause (watched)"
        elif open_until is not None and open_until > now:
            decision, left, by = pb.DECISION_CIRCUIT_OPEN, open_until - now, "breaker (watched)"
        else:
            return None
        r = pb.AcquireResponse(granted=False, decision=decision, denied_by=by, resource=resource)
        r.retry_after.FromNanoseconds(int(left * 1e9))
        return r

    def update(self, s: pb.GetCircuitStateResponse) -> None:
        """Takes in one event of a watch."""
        now, wall = time.monotonic(), time.time()
        open_until = None
        if s.state == pb.CIRCUIT_STATE_OPEN and s.HasField("half_open_after"):
            open_until = now + s.half_open_after.ToNanoseconds() / 1e9
        paused_until = None
        if s.HasField("paused_until"):
            left = s.paused_until.ToNanoseconds() / 1e9 - wall
            if left > 0:
                paused_until = now + left
        with self._lock:
            self._watched[s.resource] = (open_until, paused_until)

    def forget(self, resources: Iterable[str]) -> None:
        """Forgets what ``resources`` said (the watch broke or ended: stale state must not refuse calls)."""
        with self._lock:
            for r in resources:
                self._watched.pop(r, None)

    def down(self) -> Optional[float]:
        """Seconds left while quotad was found unreachable a moment ago, else None."""
        with self._lock:
            until = self._down_until
        left = until - time.monotonic() if until is not None else 0.0
        return left if left > 0 else None

    def mark_down(self) -> None:
        """quotad did not answer: stop trying for a short jittered while."""
        with self._lock:
            self._down_until = time.monotonic() + random.uniform(*DOWN_FOR)

    def mark_up(self) -> None:
        """quotad answered."""
        if self._down_until is not None:
            with self._lock:
                self._down_until = None

    def not_trying(self) -> Optional[Unavailable]:
        """The error to raise instead of calling, while quotad was found unreachable a moment ago."""
        left = self.down()
        if left is None:
            return None
        return Unavailable(f"quotad was unreachable a moment ago; not trying again for {left * 1000:.0f} ms")
