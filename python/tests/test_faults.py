"""Lost replies, a quotad that dies and comes back, and quotad not there at all (each on_unreachable)."""

from __future__ import annotations

import threading
import time
from typing import List

import pytest

import quotad
from quotad import LocalLimits, Progress, RetryBudget, RetryPolicy
from tests.conftest import Quotad, free_port, fresh
from tests.lossy_proxy import LossyProxy


def test_lost_replies_never_charge_twice(server: Quotad) -> None:
    res = fresh("ledger")
    proxy = LossyProxy(server.target, drop=0.2)
    # A 20% loss is beyond what the default retry budget allows (it stops retrying at ~9% failures, by
    # design); this test is about request ids, so the budget is wide open.
    policy = RetryPolicy(max_attempts=20, initial_backoff=0.005, max_backoff=0.02, deadline=30.0)
    lossy = quotad.Client(proxy.target, retry=policy, retry_budget=RetryBudget(1000, 1.0))
    direct = quotad.Client(server.target)
    try:
        replayed = 0
        for _ in range(100):
            permit = lossy.acquire(res)
            replayed += permit.replayed
            permit.release()
        assert proxy.dropped >= 20, f"the proxy lost only {proxy.dropped} of {proxy.forwarded} replies"
        assert replayed > 0, "some acquires were answered by replaying their request_id"
        with direct.acquire(res) as check:
            # 100 logical acquires and this one: exactly 101 tokens gone, whatever was lost on the wire.
            assert check.remaining == 1000 - 101
    finally:
        lossy.close()
        direct.close()
        proxy.close()


def test_quotad_killed_and_restarted_mid_run(own_server: Quotad) -> None:
    policy = RetryPolicy(max_attempts=100, initial_backoff=0.05, max_backoff=0.3, deadline=30.0)
    seen: List[Progress] = []
    # A call made while quotad is down may wait for the reconnect up to its call_timeout: keep that well under
    # the outage, so the outage is seen as failed attempts and retried, not absorbed by one slow call.
    client = quotad.Client(own_server.target, retry=policy, retry_budget=RetryBudget(1000, 1.0),
                           call_timeout=0.25, on_progress=seen.append)
    res = fresh("plain")
    errors: List[BaseException] = []
    granted = [0]
    held: List[quotad.Permit] = []  # kept, so no background release runs into the outage either
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set():
            try:
                # Acquires only: a release caught by the outage would retry inside the release (which reports
                # no progress) and the acquires would never see it. The leases end at their 1 s TTL.
                held.append(client.acquire(res, lease_ttl=1.0))
                granted[0] += 1
            except Exception as e:
                errors.append(e)
                return
            time.sleep(0.01)

    t = threading.Thread(target=worker)
    t.start()
    try:
        time.sleep(0.5)
        own_server.stop()
        before = granted[0]
        time.sleep(1.5)
        own_server.start()
        deadline = time.monotonic() + 20
        while granted[0] < before + 20 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        t.join(timeout=40)
        client.close()
    assert not errors, errors
    assert granted[0] >= before + 20, "calls resumed after the restart"
    assert any(p.event == "retrying" and "unavailable" in p.reason for p in seen)


def unreachable_client(policy: quotad.fallback.Unreachable) -> quotad.Client:
    retry = RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.01, deadline=2.0)
    return quotad.Client(f"127.0.0.1:{free_port()}", retry=retry, call_timeout=0.5, on_unreachable=policy)


def test_unreachable_fail_closed() -> None:
    with unreachable_client("fail_closed") as c:
        with pytest.raises(quotad.Unavailable):
            c.acquire("anything")
        assert c.fail_open_count == 0


def test_unreachable_fail_open() -> None:
    with unreachable_client("fail_open") as c:
        with c.acquire("anything") as p:
            assert p.local and p.lease_id is None
        assert c.fail_open_count == 1


def test_unreachable_local_limits() -> None:
    with unreachable_client(LocalLimits(rate=1000, concurrency=1)) as c:
        held = c.acquire("anything")
        assert held.local and c.local_fallback_count == 1
        with pytest.raises(quotad.Denied) as denied:
            c.acquire("anything")  # the one local slot is taken: waits to the deadline, then refuses
        assert denied.value.decision is quotad.Decision.LOCALLY_LIMITED
        held.release()
        c.acquire("anything").release()
        assert c.local_fallback_count == 2
    with unreachable_client(LocalLimits(rate=2, concurrency=10, burst=2)) as c:
        started = time.monotonic()
        for _ in range(4):
            c.acquire("anything").release()
        assert time.monotonic() - started >= 0.9, "burst 2, then 2 per second"


def test_bad_on_unreachable_is_refused() -> None:
    with pytest.raises(ValueError, match="on_unreachable"):
        quotad.Client(on_unreachable="fail_sideways")
