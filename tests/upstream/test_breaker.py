"""CircuitBreaker on its own, with a hand-driven clock."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from gateway.errors import IntegrationUnavailable
from gateway.upstream import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def gauge(source: str) -> float | None:
    return REGISTRY.get_sample_value("gateway_breaker_state", {"source": source})


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        probe = breaker.acquire()
        breaker.record_failure(probe)


def test_opens_after_consecutive_failures_only() -> None:
    breaker = CircuitBreaker("unit-a", failures=3, reset=10, clock=Clock())
    assert gauge("unit-a") == 0
    fail(breaker, 2)
    breaker.record_success(breaker.acquire())  # a success in between starts the count over
    fail(breaker, 2)
    assert breaker.state == "closed"
    fail(breaker, 1)
    assert breaker.state == "open"
    assert gauge("unit-a") == 2


def test_open_breaker_fails_fast_and_counts_down() -> None:
    clock = Clock()
    breaker = CircuitBreaker("unit-b", failures=1, reset=10, clock=clock)
    fail(breaker, 1)
    clock.now += 4

    with pytest.raises(IntegrationUnavailable) as caught:
        breaker.acquire()

    assert caught.value.source == "unit-b"
    assert caught.value.retry_after == pytest.approx(6.0)
    assert caught.value.extensions["retryAfter"] == 6.0
    assert breaker.retry_after() == pytest.approx(6.0)


def test_half_open_admits_one_probe_and_its_result_decides() -> None:
    clock = Clock()
    breaker = CircuitBreaker("unit-c", failures=1, reset=10, clock=clock)
    fail(breaker, 1)
    clock.now += 10
    assert breaker.state == "half_open"
    assert gauge("unit-c") == 1

    assert breaker.acquire() is True
    with pytest.raises(IntegrationUnavailable):
        breaker.acquire()
    breaker.record_failure(True)
    assert breaker.state == "open"
    assert breaker.retry_after() == pytest.approx(10.0)

    clock.now += 10
    assert breaker.acquire() is True
    breaker.record_success(True)
    assert breaker.state == "closed"
    assert gauge("unit-c") == 0
    assert breaker.acquire() is False


def test_released_probe_lets_the_next_caller_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker("unit-d", failures=1, reset=1, clock=clock)
    fail(breaker, 1)
    clock.now += 1
    breaker.release(breaker.acquire())  # e.g. throttled before reaching the provider
    assert breaker.state == "half_open"
    assert breaker.acquire() is True


def test_late_answers_do_not_move_an_open_breaker() -> None:
    clock = Clock()
    breaker = CircuitBreaker("unit-e", failures=2, reset=10, clock=clock)
    early = breaker.acquire()  # admitted while closed, answers after the breaker opened
    fail(breaker, 2)
    breaker.record_success(early)
    assert breaker.state == "open"
