"""The gateway's pure resilience pieces: circuit breaker, backoff policy, bounded dedupe."""

import itertools

import pytest

from casatwin.backoff import Backoff
from casatwin.gateway.breaker import BreakerState, CircuitBreaker, describe
from casatwin.gateway.dedupe import RecentKeys

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


# -- circuit breaker --------------------------------------------------------------------


def test_breaker_opens_after_the_threshold_of_failures_in_a_row():
    breaker = CircuitBreaker(failure_threshold=3, open_s=10)
    assert breaker.record_failure(0.0) is None
    assert breaker.record_failure(1.0) is None
    assert breaker.allows_requests
    transition = breaker.record_failure(2.0, "HTTP 500")
    assert transition is not None
    assert (transition.before, transition.after, transition.at) == (CLOSED, OPEN, 2.0)
    assert transition.reason == "3 failed polls in a row, the last (HTTP 500)"
    assert not breaker.allows_requests


def test_a_success_resets_the_count_of_failures():
    breaker = CircuitBreaker(failure_threshold=3, open_s=10)
    breaker.record_failure(0.0)
    breaker.record_failure(1.0)
    breaker.record_success(2.0)
    breaker.record_failure(3.0)
    breaker.record_failure(4.0)
    assert breaker.state is CLOSED


def test_open_breaker_turns_half_open_after_the_open_duration_only():
    breaker = CircuitBreaker(failure_threshold=1, open_s=10)
    breaker.record_failure(100.0)
    assert breaker.wait_s(103.0) == pytest.approx(7.0)
    assert breaker.tick(109.9) is None
    assert breaker.state is OPEN
    transition = breaker.tick(110.0)
    assert transition is not None and (transition.before, transition.after) == (OPEN, HALF_OPEN)
    assert breaker.allows_requests
    assert breaker.wait_s(110.0) == 0.0


def test_half_open_closes_after_the_configured_successful_probes():
    breaker = CircuitBreaker(failure_threshold=1, open_s=5, half_open_probes=2)
    breaker.record_failure(0.0)
    breaker.tick(5.0)
    assert breaker.record_success(6.0) is None
    assert breaker.state is HALF_OPEN
    transition = breaker.record_success(7.0)
    assert transition is not None and (transition.before, transition.after) == (HALF_OPEN, CLOSED)
    # closed again with a fresh failure count
    breaker.record_failure(8.0)
    assert breaker.state is OPEN  # threshold 1


def test_a_failed_probe_reopens_for_a_whole_open_duration():
    breaker = CircuitBreaker(failure_threshold=2, open_s=5)
    breaker.record_failure(0.0)
    breaker.record_failure(0.5)
    breaker.tick(5.5)
    transition = breaker.record_failure(6.0)
    assert transition is not None and (transition.before, transition.after) == (HALF_OPEN, OPEN)
    assert transition.reason == "the trial poll failed"
    assert breaker.tick(10.9) is None
    assert breaker.tick(11.0).after is HALF_OPEN


def test_failures_while_open_change_nothing():
    breaker = CircuitBreaker(failure_threshold=1, open_s=5)
    breaker.record_failure(0.0)
    assert breaker.record_failure(1.0) is None
    assert breaker.record_success(1.5) is None
    assert breaker.wait_s(1.0) == pytest.approx(4.0)


def test_transitions_are_described_for_operators():
    breaker = CircuitBreaker(failure_threshold=1, open_s=1)
    opened = breaker.record_failure(0.0)
    half = breaker.tick(1.0)
    closed = breaker.record_success(1.1)
    assert "OPEN" in describe(opened) and "paused" in describe(opened)
    assert "HALF-OPEN" in describe(half) and "trial" in describe(half)
    assert "CLOSED" in describe(closed) and "resumes" in describe(closed)


def test_breaker_refuses_nonsense_settings():
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0, open_s=1)
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=1, open_s=1, half_open_probes=0)


# -- backoff ----------------------------------------------------------------------------


def test_backoff_ceiling_doubles_up_to_the_cap():
    policy = Backoff(base_s=0.5, max_s=5.0)
    assert [policy.ceiling(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert policy.ceiling(10_000) == 5.0  # no overflow after a long outage


def test_backoff_delay_is_jittered_in_the_upper_half_of_the_ceiling():
    policy = Backoff(base_s=1.0, max_s=60.0)
    assert policy.delay(3, lambda: 0.0) == 2.0
    assert policy.delay(3, lambda: 0.5) == 3.0
    assert policy.delay(3, lambda: 0.999) == pytest.approx(3.998)
    assert policy.delay(100, lambda: 0.0) == 30.0


def test_backoff_jitter_spreads_retries_and_stays_in_bounds():
    import random

    rng = random.Random(1)
    policy = Backoff(base_s=0.2, max_s=10.0)
    delays = [policy.delay(4, rng.random) for _ in range(500)]
    assert all(0.8 <= d <= 1.6 for d in delays)
    assert max(delays) - min(delays) > 0.6  # not all retries at the same instant


def test_backoff_refuses_nonsense_settings():
    with pytest.raises(ValueError):
        Backoff(base_s=0, max_s=1)
    with pytest.raises(ValueError):
        Backoff(base_s=2, max_s=1)


# -- dedupe -----------------------------------------------------------------------------


def test_recent_keys_remember_up_to_capacity_and_forget_the_oldest():
    seen = RecentKeys(capacity=3)
    for key in [("a", 1), ("a", 2), ("b", 1)]:
        seen.add(key)
    assert ("a", 1) in seen
    seen.add(("b", 2))
    assert ("a", 1) not in seen
    assert all(k in seen for k in [("a", 2), ("b", 1), ("b", 2)])
    assert len(seen) == 3


def test_recent_keys_memory_stays_bounded():
    seen = RecentKeys(capacity=100)
    seen.update((f"s{i % 7}", i) for i in itertools.islice(itertools.count(), 10_000))
    assert len(seen) == 100
    assert (f"s{9_999 % 7}", 9_999) in seen  # the newest are kept
    assert (f"s{9_899 % 7}", 9_899) not in seen  # the 101st newest is forgotten
