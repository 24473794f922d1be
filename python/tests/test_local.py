"""Failing fast locally: watched breakers and pauses refused without a round trip, and a quotad found
unreachable not tried again for a moment (quotad._local)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable, List

import grpc
import pytest

import quotad
import quotad._local
from quotad import Decision, Outcome, Progress, RetryPolicy
from tests.conftest import Quotad, free_port, fresh

ONCE = RetryPolicy(max_attempts=1)


def eventually(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.02)


def open_breaker(client: quotad.Client, res: str) -> None:
    """Fails calls until the breaker (two calls, half failed) is OPEN."""
    for _ in range(10):
        if client.circuit_state(res).state is quotad.CircuitState.OPEN:
            return
        client.acquire(res).release(Outcome.FAILURE)
    assert client.circuit_state(res).state is quotad.CircuitState.OPEN


def test_a_watched_open_breaker_is_refused_without_a_round_trip(server: Quotad) -> None:
    res = fresh("breaker")
    with quotad.Client(server.target, retry=ONCE) as client:
        open_breaker(client, res)
        with client.watch([res]) as watch:
            assert watch.resources == [res]
            eventually(lambda: client._known.refusal(res) is not None)
            with pytest.raises(quotad.Denied) as denied:
                client.acquire(res)
            # Answered locally: quotad names its own deciders, never "(watched)".
            assert denied.value.decision is Decision.CIRCUIT_OPEN
            assert denied.value.denied_by == "breaker (watched)"
            assert 50 < denied.value.retry_after <= 60
        # Stopped: forgotten, so the next acquire asks quotad again (which denies it itself).
        assert client._known.refusal(res) is None
        with pytest.raises(quotad.Denied) as denied:
            client.acquire(res)
        assert denied.value.decision is Decision.CIRCUIT_OPEN
        assert "watched" not in denied.value.denied_by


def test_a_watched_pause_is_refused_locally_and_waited_out(server: Quotad) -> None:
    res = fresh("throttle")
    events: List[Progress] = []
    with quotad.Client(server.target) as client, client.watch([res]):
        client.report_throttle(res, retry_after=1.0)
        eventually(lambda: client._known.refusal(res) is not None)
        # The default policy waits the pause out (each retry also refused locally), then quotad grants.
        with client.acquire(res, on_progress=events.append):
            pass
        assert any("pause (watched)" in p.reason for p in events if p.event == "retrying"), events


def test_an_unwatched_resource_is_not_refused(server: Quotad) -> None:
    watched, other = fresh("breaker"), fresh("breaker")
    with quotad.Client(server.target, retry=ONCE) as client:
        open_breaker(client, watched)
        with client.watch([watched]):
            eventually(lambda: client._known.refusal(watched) is not None)
            with client.acquire(other):
                pass


def test_a_watch_quotad_refuses_is_said_once(server: Quotad, caplog: pytest.LogCaptureFixture) -> None:
    # A misspelt (unconfigured) name would never refuse anything: the client says so, once.
    caplog.set_level(logging.WARNING, logger="quotad")

    def said() -> int:
        return sum("refused to watch" in r.getMessage() for r in caplog.records)

    with quotad.Client(server.target) as client, client.watch(["py.nothing.configured"]):
        eventually(lambda: said() == 1)
        time.sleep(2.0)  # at least one more refused attempt
        assert said() == 1
    (line,) = [r.getMessage() for r in caplog.records if "refused to watch" in r.getMessage()]
    assert "NOT_FOUND" in line and "py.nothing.configured" in line, line


def test_watch_arguments_are_checked(server: Quotad) -> None:
    with quotad.Client(server.target) as client:
        for bad, words in (([], "1 to 64"), ([f"r{i}" for i in range(65)], "1 to 64"), ([""], "non-empty")):
            with pytest.raises(ValueError, match=words):
                client.watch(bad)
        with pytest.raises(TypeError, match="not one str"):
            client.watch("py.plain.x")


def test_a_watch_survives_a_restart_and_forgets_while_broken(own_server: Quotad) -> None:
    res = fresh("breaker")
    with quotad.Client(own_server.target, retry=ONCE) as client:
        open_breaker(client, res)
        with client.watch([res]):
            eventually(lambda: client._known.refusal(res) is not None)
            own_server.stop()
            # The stream broke: stale knowledge must not refuse calls.
            eventually(lambda: client._known.refusal(res) is None)
            own_server.start()
            # A new quotad (in memory) has a closed breaker, so grants go through; opened there, the
            # watch (made again by itself) sees it.
            eventually(lambda: _grants(client, res))
            open_breaker(client, res)
            eventually(lambda: client._known.refusal(res) is not None)


def _grants(client: quotad.Client, res: str) -> bool:
    try:
        client.acquire(res).release()
        return True
    except quotad.QuotadError:
        return False


def test_an_unreachable_quotad_is_not_tried_again_for_a_moment(monkeypatch: pytest.MonkeyPatch) -> None:
    # A long window, so a busy machine cannot outlast it between two calls.
    monkeypatch.setattr(quotad._local, "DOWN_FOR", (30.0, 30.0))
    with quotad.Client(f"127.0.0.1:{free_port()}", retry=ONCE, call_timeout=2.0) as client:
        with pytest.raises(quotad.Unavailable) as first:
            client.acquire("py.plain.x")
        assert "unreachable a moment ago" not in str(first.value)
        with pytest.raises(quotad.Unavailable, match="unreachable a moment ago"):
            client.acquire("py.plain.x")
        with pytest.raises(quotad.Unavailable, match="unreachable a moment ago"):
            client.circuit_state("py.plain.x")


def test_the_moment_passes_and_an_answer_ends_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from quotad._local import Known

    known = Known()
    assert known.down() is None and known.not_trying() is None
    monkeypatch.setattr(quotad._local, "DOWN_FOR", (0.01, 0.02))
    known.mark_down()
    time.sleep(0.05)
    assert known.down() is None
    monkeypatch.setattr(quotad._local, "DOWN_FOR", (30.0, 30.0))
    known.mark_down()
    left = known.down()
    assert left is not None and 29 < left <= 30
    known.mark_up()
    assert known.down() is None


REDIS_DOWN = """
store = "redis"
[redis]
url = "redis://127.0.0.1:{redis}"
[server]
listen = "127.0.0.1:{port}"
[metrics]
enabled = false
[[resources]]
name = "py.store"
rate = {{ limit = 10, period = "1s", burst = 10 }}
on_store_error = "fail_closed"
"""


def test_quotad_answering_unavailable_is_not_unreachable() -> None:
    # quotad is up but its store is not: it answers UNAVAILABLE itself, so the client keeps asking it.
    q = Quotad()
    with open(q.config, "w") as f:
        f.write(REDIS_DOWN.format(redis=free_port(), port=q.port))
    q.start()
    try:
        with quotad.Client(q.target, retry=ONCE) as client:

            def store_down_answered() -> bool:
                try:
                    client.acquire("py.store")
                except quotad.Unavailable as e:
                    return "store" in str(e)
                return False

            # Until quotad serves (it connects to its store first), calls may not reach it.
            eventually(store_down_answered)
            for _ in range(3):
                with pytest.raises(quotad.Unavailable) as e:
                    client.acquire("py.store")
                assert "store" in str(e.value) and "moment ago" not in str(e.value)
    finally:
        q.stop()


def test_async_watch_and_fail_fast(server: Quotad, monkeypatch: pytest.MonkeyPatch) -> None:
    res = fresh("breaker")
    monkeypatch.setattr(quotad._local, "DOWN_FOR", (30.0, 30.0))

    async def main() -> None:
        async with quotad.AsyncClient(server.target, retry=ONCE) as client:
            for _ in range(2):
                await (await client.acquire(res)).release(Outcome.FAILURE)
            async with client.watch([res]):
                deadline = time.monotonic() + 10
                while client._known.refusal(res) is None:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.02)
                with pytest.raises(quotad.Denied) as denied:
                    await client.acquire(res)
                assert denied.value.denied_by == "breaker (watched)"
            assert client._known.refusal(res) is None
        async with quotad.AsyncClient(f"127.0.0.1:{free_port()}", retry=ONCE) as dead:
            with pytest.raises(quotad.Unavailable):
                await dead.acquire("py.plain.x")
            with pytest.raises(quotad.Unavailable, match="unreachable a moment ago"):
                await dead.acquire("py.plain.x")

    asyncio.run(main())


def test_closing_a_client_ends_its_watches(server: Quotad) -> None:
    # A careless user closes the client and forgets the watch: it must not reopen channels behind the close.
    res = fresh("breaker")
    client = quotad.Client(server.target, retry=ONCE)
    open_breaker(client, res)
    watch = client.watch([res])
    eventually(lambda: client._known.refusal(res) is not None)
    client.close()
    assert not watch._thread.is_alive()
    assert client._known.refusal(res) is None and client._channels == {} and not client._watches

    async def main() -> None:
        aclient = quotad.AsyncClient(server.target)
        awatch = aclient.watch([res])
        deadline = time.monotonic() + 10
        while aclient._known.refusal(res) is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        await aclient.close()
        assert awatch._task.done() and aclient._channels == {} and not aclient._watches

    asyncio.run(main())


def test_the_watch_thread_ends_with_stop(server: Quotad) -> None:
    with quotad.Client(server.target) as client:
        watch = client.watch([fresh("plain")])
        watch.stop()
        assert not watch._thread.is_alive()


class _Err(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def test_what_counts_as_unreachable() -> None:
    from quotad._local import unreachable

    U = grpc.StatusCode.UNAVAILABLE
    for transport in (
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Connection refused",
        "Socket closed",
        "recvmsg:Connection reset by peer",
        "upstream connect error or disconnect/reset before headers",
    ):
        assert unreachable(_Err(U, transport)), transport
    assert unreachable(_Err(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"))
    # quotad's own answers, even when they quote a transport error further on.
    assert not unreachable(_Err(U, "quota store unavailable: redis: Connection refused (os error 111)"))
    assert not unreachable(_Err(U, "quotad is shutting down"))
    assert not unreachable(_Err(grpc.StatusCode.RESOURCE_EXHAUSTED, "failed to connect"))
