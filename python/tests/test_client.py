"""The blocking client against a real quotad."""

from __future__ import annotations

import multiprocessing
import threading
import time
from typing import List

import pytest

import quotad
from quotad import CircuitState, Outcome, Progress, RetryPolicy, Throttled
from tests.conftest import Quotad, fresh

FAST = RetryPolicy(max_attempts=5, initial_backoff=0.01, max_backoff=0.05, deadline=10.0)


@pytest.fixture
def client(server: Quotad) -> "quotad.Client":
    with quotad.Client(server.target, retry=FAST) as c:
        yield c


def remaining(client: quotad.Client, resource: str) -> int:
    """Tokens left after one more 1-permit acquire (released at once)."""
    with client.acquire(resource, retry=RetryPolicy.no_retries()) as p:
        return p.remaining


def test_acquire_and_release(client: quotad.Client) -> None:
    res = fresh("conc")
    permit = client.acquire(res)
    assert permit.lease_id and not permit.local and permit.expires_at is not None
    assert permit.ttl == pytest.approx(2.0)
    assert (permit.rule, permit.config_version) == ("py.conc.*", 1)
    done = permit.release()
    assert done is not None and done.released
    assert permit.release() is None, "released once"
    again = client.release(permit.lease_id)
    assert not again.released and again.reason == "already_released"


def test_context_manager_success_releases(client: quotad.Client) -> None:
    res = fresh("conc")
    for _ in range(5):  # two slots: five blocks in a row only work if each released its slot
        with client.acquire(res, retry=RetryPolicy.no_retries()) as p:
            assert p.lease_id
    assert client.release(p.lease_id or "").reason == "already_released"


def test_context_manager_exception_is_failure(client: quotad.Client) -> None:
    res = fresh("throttle")
    with pytest.raises(ValueError):
        with client.acquire(res):
            raise ValueError("downstream broke")
    state = client.circuit_state(res)
    assert (state.failures, state.calls) == (1, 1)
    assert state.paused_until is None, "a failure is not a throttle"


class FakeHTTPError(Exception):
    """What requests' HTTPError looks like: a response with a status and headers."""

    def __init__(self, status: int, headers: dict) -> None:
        super().__init__(f"HTTP {status}")
        self.response = type("Response", (), {"status_code": status, "headers": headers})()


def test_context_manager_throttle_reports_and_pauses(client: quotad.Client) -> None:
    res = fresh("throttle")
    with pytest.raises(FakeHTTPError):
        with client.acquire(res):
            raise FakeHTTPError(429, {"Retry-After": "3"})
    state = client.circuit_state(res)
    assert (state.failures, state.calls) == (1, 1), "reported and released THROTTLED, counted once"
    assert state.paused_until is not None, "the fleet is paused until the downstream's Retry-After"
    assert state.effective_rate_per_second < state.configured_rate_per_second
    with pytest.raises(quotad.Denied) as denied:
        client.acquire(res, retry=RetryPolicy.no_retries())
    assert denied.value.decision is quotad.Decision.PAUSED
    assert 1.0 < denied.value.retry_after <= 3.0


def test_settle_refunds_the_unused(client: quotad.Client) -> None:
    res = fresh("ledger")
    with client.acquire(res, permits=10) as p:
        assert p.remaining == 990
        p.settle(3)
    assert remaining(client, res) == 1000 - 3 - 1


def test_renew_and_auto_renew(client: quotad.Client) -> None:
    res = fresh("conc")
    manual = client.acquire(res, lease_ttl=1.0)
    before = manual.expires_at
    time.sleep(0.2)
    after = manual.renew(5.0)
    assert before is not None and after is not None and after > before
    held = client.acquire(res, lease_ttl=1.0, auto_renew=True)
    time.sleep(2.5)  # past the 1 s TTL (and the sweep): only renewal keeps it
    assert held.release() is not None and manual.release() is not None
    lapsed = client.acquire(res, lease_ttl=1.0)
    time.sleep(2.5)
    r = lapsed.release()
    assert r is not None and not r.released and r.reason == "expired"


def test_run_retries_two_throttles_then_succeeds(client: quotad.Client) -> None:
    res = fresh("throttle")
    calls: List[str] = []
    seen: List[Progress] = []

    def call() -> str:
        calls.append("x")
        if len(calls) <= 2:
            raise Throttled("slow down", retry_after=0.05)
        return "ok"

    assert client.run(res, call, on_progress=seen.append) == "ok"
    assert len(calls) == 3
    retries = [p for p in seen if p.event == "retrying"]
    assert len(retries) == 2 and all("throttled" in p.reason for p in retries)
    assert str(retries[0]).startswith(f"{res}: retry 2/5 in ")
    assert client.circuit_state(res).failures == 2, "each throttle counted once"


def test_run_returned_429_is_a_throttle_and_gives_up(client: quotad.Client) -> None:
    res = fresh("throttle")
    response = type("Response", (), {"status_code": 429, "headers": {"retry-after": "0"}})()
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02)
    assert client.run(res, lambda: response, retry=policy) is response, "the last throttled answer comes back"
    assert client.circuit_state(res).failures == 3


def test_limited_decorator(client: quotad.Client) -> None:
    res = fresh("ledger")

    @client.limited(res, permits=5)
    def work(x: int) -> int:
        return x * 2

    assert work(21) == 42 and work(1) == 2
    assert remaining(client, res) == 1000 - 10 - 1


def test_denied_beyond_the_policy(client: quotad.Client) -> None:
    res = fresh("rate")
    client.acquire(res).release()
    client.acquire(res).release()
    with pytest.raises(quotad.Denied) as denied:
        client.acquire(res, retry=RetryPolicy.no_retries())
    assert denied.value.decision is quotad.Decision.RATE_LIMITED and denied.value.denied_by == "resource"
    assert (denied.value.rule, denied.value.config_version) == ("py.rate.*", 1), "the glob rule that decided"
    assert 0 < denied.value.retry_after <= 0.5
    # With retries, the client waits the server's retry_after (plus jitter) and gets it.
    started = time.monotonic()
    client.acquire(res, retry=RetryPolicy(max_attempts=5, initial_backoff=0.01)).release()
    assert time.monotonic() - started >= denied.value.retry_after * 0.5


def test_partitions_by_descriptor_keyword(client: quotad.Client) -> None:
    res = fresh("tenant")
    client.acquire(res, tenant="acme").release()
    client.acquire(res, tenant="globex").release()
    with pytest.raises(quotad.Denied) as denied:
        client.acquire(res, tenant="acme", retry=RetryPolicy.no_retries())
    assert denied.value.denied_by == "tenant=acme"


def test_priority_keyword_and_bypassed_permits(client: quotad.Client) -> None:
    res = fresh("prio")
    for _ in range(7):
        client.acquire(res).release()  # the default class is the lowest: batch
    with pytest.raises(quotad.Denied) as denied:
        client.acquire(res, priority="batch", retry=RetryPolicy.no_retries())
    assert denied.value.denied_by == "resource (reserved for critical)"
    for _ in range(3):
        client.acquire(res, priority="critical", retry=RetryPolicy.no_retries()).release()
    with pytest.raises(quotad.InvalidRequest, match="priority"):
        client.acquire(res, priority="urgent")
    # run takes the class too: batch has nothing left of a fresh resource's 7, critical has its 3.
    other = fresh("prio")
    for _ in range(7):
        client.acquire(other, priority="batch").release()
    assert client.run(other, lambda: 7, priority="critical", retry=RetryPolicy.no_retries()) == 7
    # A bypassed descriptor value: granted past the tenant's one token an hour, and says so.
    tenant = fresh("tenant")
    for _ in range(3):
        with client.acquire(tenant, tenant="internal", retry=RetryPolicy.no_retries()) as p:
            assert p.bypassed and not p.replayed
    with client.acquire(tenant, tenant="acme") as p:
        assert not p.bypassed


def test_a_permit_that_holds_nothing_sends_no_release(client: quotad.Client) -> None:
    res = fresh("final")
    with client.acquire(res) as p:
        assert p.holds_nothing and p.lease_id is not None
        assert p.renew() is None
    p2 = client.acquire(res)
    p2.settle(0)
    assert p2.release() is None, "nothing sent"
    with pytest.raises(quotad.Denied):
        client.acquire(res, retry=RetryPolicy.no_retries())  # both tokens taken, nothing refunded
    # The server answers a Release of it anyway: released, nothing settled.
    r = client.release(p2.lease_id or "", used=0)
    assert r.released
    with client.acquire(fresh("plain")) as kept:
        assert not kept.holds_nothing


def test_bad_requests_are_not_retried(client: quotad.Client) -> None:
    seen: List[Progress] = []
    with pytest.raises(quotad.NotFound):
        client.acquire("no.such.resource", on_progress=seen.append)
    with pytest.raises(quotad.InvalidRequest) as bad:
        client.acquire(fresh("plain"), descriptors={"k" * 300: "v"}, on_progress=seen.append)
    assert "descriptor" in str(bad.value)
    with pytest.raises(quotad.FailedPrecondition):
        client.acquire(fresh("rate"), permits=3, on_progress=seen.append)  # above burst: can never succeed
    assert not [p for p in seen if p.event == "retrying"]
    with pytest.raises(ValueError, match="permits"):
        client.acquire(fresh("plain"), permits=0)
    with pytest.raises(ValueError, match="lease_ttl"):
        client.acquire(fresh("plain"), lease_ttl=-1)


def test_another_lease_id_is_not_found_not_a_crash(client: quotad.Client) -> None:
    r = client.release("0" * 16)
    assert not r.released and r.reason == "unknown_lease"


def test_one_client_shared_by_threads(client: quotad.Client) -> None:
    res = fresh("conc")
    in_flight, peak, errors = [0], [0], []
    lock = threading.Lock()
    policy = RetryPolicy(max_attempts=200, initial_backoff=0.005, max_backoff=0.02, deadline=60.0)

    def worker() -> None:
        try:
            for _ in range(10):
                with client.acquire(res, retry=policy):
                    with lock:
                        in_flight[0] += 1
                        peak[0] = max(peak[0], in_flight[0])
                    time.sleep(0.002)
                    with lock:
                        in_flight[0] -= 1
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert peak[0] <= 2, "concurrency 2 held across threads"


def test_dropped_permit_is_released_in_the_background(client: quotad.Client) -> None:
    res = fresh("conc")
    lease = client.acquire(res).lease_id  # dropped at once, never released by hand
    for _ in range(100):
        if client.release(lease or "").reason == "already_released":
            break
        time.sleep(0.05)
    else:
        pytest.fail("the dropped permit was not released")


def test_lazy_client_builds_without_a_server() -> None:
    started = time.monotonic()
    c = quotad.Client("127.0.0.1:1", call_timeout=0.2)
    assert time.monotonic() - started < 0.5
    c.close()


def test_token_needs_tls() -> None:
    with pytest.raises(ValueError, match="TLS"):
        quotad.Client("127.0.0.1:1", token="secret")


def test_report_throttle_and_circuit_state(client: quotad.Client) -> None:
    res = fresh("throttle")
    report = client.report_throttle(res, retry_after=1.0, message="429 from downstream")
    assert report.paused_until is not None and report.rate_decreased
    assert report.circuit_state is CircuitState.CLOSED
    assert client.circuit_state(res).state is CircuitState.CLOSED


def test_outcome_unknown_on_keyboard_interrupt(client: quotad.Client) -> None:
    res = fresh("throttle")
    with pytest.raises(KeyboardInterrupt):
        with client.acquire(res):
            raise KeyboardInterrupt
    assert client.circuit_state(res).calls == 0, "UNKNOWN is not counted by the breaker"
    assert Outcome.UNKNOWN.value == 4


def _child(target: str, resource: str, client: quotad.Client, out: "multiprocessing.Queue[str]") -> None:
    with client.acquire(resource) as p:
        out.put(p.lease_id or "")


def test_a_client_made_before_fork_works_in_the_child(server: Quotad) -> None:
    import multiprocessing

    client = quotad.Client(server.target, retry=FAST)  # lazy: no channel yet
    ctx = multiprocessing.get_context("fork")
    out: "multiprocessing.Queue[str]" = ctx.Queue()
    child = ctx.Process(target=_child, args=(server.target, fresh("plain"), client, out))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert out.get(timeout=5)
    with client.acquire(fresh("plain")):  # and the parent still works, on channels of its own
        pass
    client.close()
