"""Backoff bounds of every jitter strategy, property-based (hypothesis), with no real sleeping."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from quotad import Backoff, Jitter, RetryBudget, RetryPolicy

policies = st.builds(
    lambda initial, span, mult, jitter: RetryPolicy(
        max_attempts=10, initial_backoff=initial, max_backoff=initial + span, multiplier=mult, jitter=jitter
    ),
    st.floats(0.001, 5.0),
    st.floats(0.0, 60.0),
    st.floats(1.0, 10.0),
    st.sampled_from(list(Jitter)),
)


@given(policies, st.integers(0, 2**32), st.integers(1, 40))
def test_every_delay_is_within_its_strategys_bounds(policy: RetryPolicy, seed: int, n: int) -> None:
    b = Backoff(policy, random.Random(seed))
    previous = policy.initial_backoff
    for i in range(n):
        bound = policy.bound(i)
        d = b.next_delay()
        assert 0.0 <= d <= policy.max_backoff
        if policy.jitter is Jitter.NONE:
            assert d == bound
        elif policy.jitter is Jitter.FULL:
            assert d <= bound
        elif policy.jitter is Jitter.EQUAL:
            assert bound / 2 <= d <= bound
        else:
            assert policy.initial_backoff <= d <= max(previous * 3, policy.initial_backoff)
            previous = d


@given(policies, st.integers(0, 2**32), st.floats(0.0, 3600.0))
def test_a_retry_after_is_never_undercut(policy: RetryPolicy, seed: int, retry_after: float) -> None:
    b = Backoff(policy, random.Random(seed))
    for _ in range(5):
        d = b.after(retry_after)
        assert retry_after <= d <= retry_after + max(retry_after, policy.initial_backoff)


@given(st.integers(0, 10_000))
def test_bound_grows_and_caps(n: int) -> None:
    p = RetryPolicy(initial_backoff=0.1, max_backoff=5.0, multiplier=2.0)
    assert p.bound(n) == min(0.1 * 2 ** min(n, 1000), 5.0) or p.bound(n) == 5.0
    assert p.bound(n) <= p.bound(n + 1)


def test_full_jitter_spreads_over_the_whole_range() -> None:
    p = RetryPolicy(initial_backoff=0.1, jitter=Jitter.FULL)
    rng = random.Random(7)
    buckets = [0] * 10
    for _ in range(10_000):
        d = Backoff(p, rng).next_delay()
        buckets[min(int(d / 0.01), 9)] += 1
    assert all(800 <= n <= 1200 for n in buckets), buckets


def test_budget_stops_retries_in_an_outage_and_refills() -> None:
    b = RetryBudget(10, 0.5)
    for _ in range(4):
        b.on_failure()
    assert b.allows_retry()
    b.on_failure()
    assert not b.allows_retry(), "5 of 10 tokens is not more than half"
    b.on_success()
    assert b.allows_retry()


def test_policy_refuses_nonsense() -> None:
    import pytest

    for bad in (dict(max_attempts=0), dict(initial_backoff=2.0, max_backoff=1.0), dict(multiplier=0.5),
                dict(deadline=0.0), dict(initial_backoff=float("nan"))):
        with pytest.raises(ValueError):
            RetryPolicy(**bad)  # type: ignore[arg-type]
