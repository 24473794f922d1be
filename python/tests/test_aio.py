"""The asyncio client against a real quotad (each test runs its own event loop with asyncio.run)."""

from __future__ import annotations

import asyncio
from typing import List

import pytest

import quotad
from quotad import RetryPolicy, Throttled
from tests.conftest import Quotad, fresh

FAST = RetryPolicy(max_attempts=5, initial_backoff=0.01, max_backoff=0.05, deadline=10.0)


def test_500_tasks_under_a_concurrency_of_50(server: Quotad) -> None:
    res = fresh("async")
    counts = {"now": 0, "peak": 0, "done": 0}

    async def task(c: quotad.AsyncClient) -> None:
        # max_wait: the server queues the call (FIFO) until a slot frees, instead of the client polling.
        async with c.acquire(res, max_wait=30.0):
            counts["now"] += 1
            counts["peak"] = max(counts["peak"], counts["now"])
            await asyncio.sleep(0.01)
            counts["now"] -= 1
        counts["done"] += 1

    async def main() -> None:
        # The server queues a bounded number of waiters per key; past that it denies, and the client backs off.
        patient = RetryPolicy(max_attempts=1000, initial_backoff=0.01, max_backoff=0.1, deadline=60.0)
        async with quotad.AsyncClient(server.target, retry=patient) as c:
            await asyncio.gather(*(task(c) for _ in range(500)))

    asyncio.run(main())
    assert counts["done"] == 500
    assert 1 < counts["peak"] <= 50


def test_async_context_manager_outcomes(server: Quotad) -> None:
    async def main() -> None:
        async with quotad.AsyncClient(server.target, retry=FAST) as c:
            res = fresh("throttle")
            async with c.acquire(res) as p:
                assert p.lease_id
            with pytest.raises(RuntimeError):
                async with c.acquire(res):
                    raise RuntimeError("downstream broke")
            with pytest.raises(Throttled):
                async with c.acquire(res):
                    raise Throttled(retry_after=2.0)
            state = await c.circuit_state(res)
            assert (state.failures, state.calls) == (2, 3)
            assert state.paused_until is not None
            permit = await c.acquire(fresh("ledger"), permits=4)
            permit.settle(1)
            r = await permit.release()
            assert r is not None and r.released and r.refunded_permits == 3

    asyncio.run(main())


def test_async_run_retries_throttles_and_decorator(server: Quotad) -> None:
    async def main() -> None:
        async with quotad.AsyncClient(server.target, retry=FAST) as c:
            res = fresh("throttle")
            calls: List[int] = []

            @c.limited(res)
            async def call(x: int) -> int:
                calls.append(x)
                if len(calls) <= 2:
                    raise Throttled(retry_after=0.05)
                return x + 1

            assert await call(41) == 42
            assert len(calls) == 3
            assert (await c.circuit_state(res)).failures == 2

    asyncio.run(main())


def test_async_auto_renew_and_cancellation(server: Quotad) -> None:
    async def main() -> None:
        async with quotad.AsyncClient(server.target, retry=FAST) as c:
            res = fresh("conc")
            held = await c.acquire(res, lease_ttl=1.0, auto_renew=True)
            await asyncio.sleep(2.5)
            r = await held.release()
            assert r is not None and r.released, "auto-renew kept the 1 s lease alive"

            async def cancelled() -> None:
                async with c.acquire(res):
                    await asyncio.sleep(60)

            t = asyncio.ensure_future(cancelled())
            await asyncio.sleep(0.2)
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            # The cancelled block's lease is released in the background: both slots are free again.
            await asyncio.sleep(0.2)
            a = await c.acquire(res, retry=RetryPolicy.no_retries())
            b = await c.acquire(res, retry=RetryPolicy.no_retries())
            await a.release()
            await b.release()

    asyncio.run(main())


def test_async_denied_and_unreachable(server: Quotad) -> None:
    async def main() -> None:
        async with quotad.AsyncClient(server.target, retry=FAST) as c:
            res = fresh("rate")
            await (await c.acquire(res)).release()
            await (await c.acquire(res)).release()
            with pytest.raises(quotad.Denied):
                await c.acquire(res, retry=RetryPolicy.no_retries())
            prio = fresh("prio")
            for _ in range(7):
                await (await c.acquire(prio, priority="batch")).release()
            with pytest.raises(quotad.Denied) as denied:
                await c.acquire(prio, priority="batch", retry=RetryPolicy.no_retries())
            assert denied.value.denied_by == "resource (reserved for critical)"
            p = await c.acquire(prio, priority="critical", retry=RetryPolicy.no_retries())
            assert not p.bypassed
            await p.release()
        retry = RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.01, deadline=2.0)
        async with quotad.AsyncClient("127.0.0.1:1", retry=retry, call_timeout=0.5, on_unreachable="fail_open") as c:
            p = await c.acquire("anything")
            assert p.local and c.fail_open_count == 1

    asyncio.run(main())
