"""The circuit breaker's states with an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.services.llm.circuit_breaker import CircuitBreaker, CircuitBreakerRegistry

WALL_START = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


class Clock:
    """A monotonic clock (called) with the wall clock beside it (`wall`)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return WALL_START + timedelta(seconds=self.now - 1000.0)

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def breaker(clock: Clock, threshold: int = 3, recovery: float = 60.0, half_open: int = 1) -> CircuitBreaker:
    return CircuitBreaker(
        failure_threshold=threshold,
        recovery_timeout_s=recovery,
        half_open_max_calls=half_open,
        clock=clock,
        wall_clock=clock.wall,
    )


def test_closed_until_the_threshold_of_consecutive_failures(clock: Clock) -> None:
    cb = breaker(clock)
    cb.record_failure()
    cb.record_failure()
    assert cb.state == "closed" and cb.allow()
    cb.record_failure()
    assert cb.state == "open"
    assert not cb.allow()


def test_a_success_resets_the_consecutive_count(clock: Clock) -> None:
    cb = breaker(clock)
    cb.record_failure()
    cb.record_failure()
    cb.record_success()
    cb.record_failure()
    cb.record_failure()
    assert cb.state == "closed"
    assert cb.failures == 2


def test_half_open_after_the_recovery_timeout(clock: Clock) -> None:
    cb = breaker(clock, threshold=1, recovery=30.0)
    cb.record_failure()
    clock.advance(29.9)
    assert cb.state == "open" and not cb.allow()
    clock.advance(0.1)
    assert cb.state == "half_open"


def test_half_open_lets_a_limited_number_of_trial_calls_through(clock: Clock) -> None:
    cb = breaker(clock, threshold=1, recovery=10.0, half_open=2)
    cb.record_failure()
    clock.advance(10)
    assert cb.allow()
    assert cb.allow()
    assert not cb.allow()


def test_a_half_open_success_closes(clock: Clock) -> None:
    cb = breaker(clock, threshold=2, recovery=10.0)
    cb.record_failure()
    cb.record_failure()
    clock.advance(10)
    assert cb.allow()
    cb.record_success()
    assert cb.state == "closed"
    assert cb.failures == 0
    assert cb.allow()


def test_a_half_open_failure_opens_again_for_a_full_timeout(clock: Clock) -> None:
    cb = breaker(clock, threshold=2, recovery=10.0)
    cb.record_failure()
    cb.record_failure()
    clock.advance(15)
    assert cb.allow()
    cb.record_failure()
    assert cb.state == "open"
    assert cb.snapshot()["opened_at"] == clock.wall().isoformat(timespec="seconds")
    clock.advance(9)
    assert not cb.allow()
    clock.advance(1)
    assert cb.allow()


def test_snapshot(clock: Clock) -> None:
    cb = breaker(clock, threshold=1, recovery=60.0)
    assert cb.snapshot()["state"] == "closed"
    assert cb.snapshot()["next_attempt_in_s"] is None
    cb.record_failure()
    clock.advance(20.3)
    snap = cb.snapshot()
    assert snap["state"] == "open"
    assert snap["failures"] == 1
    # when it opened, on the wall clock, and whole seconds to the next attempt (39.7 rounds up)
    assert snap["opened_at"] == "2026-03-02T06:00:00+00:00"
    assert snap["next_attempt_in_s"] == 40 and isinstance(snap["next_attempt_in_s"], int)
    assert snap["times_opened"] == 1
    clock.advance(39.7)
    assert cb.snapshot()["state"] == "half_open"
    assert cb.snapshot()["next_attempt_in_s"] is None
    cb.record_success()
    assert cb.snapshot()["opened_at"] is None


def test_late_failures_while_open_do_not_extend_the_timeout(clock: Clock) -> None:
    cb = breaker(clock, threshold=1, recovery=10.0)
    cb.record_failure()
    clock.advance(5)
    cb.record_failure()
    clock.advance(5)
    assert cb.state == "half_open"


def test_reset(clock: Clock) -> None:
    cb = breaker(clock, threshold=1)
    cb.record_failure()
    cb.reset()
    assert cb.state == "closed" and cb.failures == 0 and cb.allow()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failure_threshold": 0, "recovery_timeout_s": 1.0},
        {"failure_threshold": 1, "recovery_timeout_s": -1.0},
        {"failure_threshold": 1, "recovery_timeout_s": 1.0, "half_open_max_calls": 0},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]


def test_the_registry_keeps_one_breaker_per_model(clock: Clock) -> None:
    registry = CircuitBreakerRegistry(failure_threshold=2, recovery_timeout_s=30.0, clock=clock)
    registry.record_failure("openai/gpt-5")
    registry.record_failure("openai/gpt-5")
    assert not registry.allow("openai/gpt-5")
    assert registry.allow("x-ai/grok-4")
    assert registry.get("openai/gpt-5") is registry.get("openai/gpt-5")
    assert "openai/gpt-5" in registry and "deepseek/deepseek-r1" not in registry
    assert registry.keys() == ["openai/gpt-5", "x-ai/grok-4"]
    snap = registry.snapshot()
    assert snap["openai/gpt-5"]["state"] == "open"
    assert snap["x-ai/grok-4"]["state"] == "closed"
    clock.advance(30)
    assert registry.allow("openai/gpt-5")
    registry.record_success("openai/gpt-5")
    assert registry.get("openai/gpt-5").state == "closed"
