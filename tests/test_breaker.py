"""The circuit breaker: fail fast on a dead store, probe, recover, log once.

How: the breaker alone is driven with an injected monotonic clock through
every transition (closed -> open -> half-open -> closed / open again). Then a
BudgetManager runs on fakeredis behind a client whose script calls can be
switched to fail, counting the calls that reach the store: after the
configured number of consecutive failures, admission must raise
``BudgetUnavailableError`` without touching the store, one probe must go
through once the reset time passed, and the log must say "opened" and
"closed" once each however many requests were refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from loguru import logger
from pydantic import ValidationError
from redis import exceptions as redis_errors

from spendgate import BudgetConfig, BudgetManager, BudgetUnavailableError
from spendgate.durability.breaker import BreakerState, CircuitBreaker


class _Time:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_the_threshold_of_consecutive_failures() -> None:
    t = _Time()
    breaker = CircuitBreaker(3, 2.0, monotonic=t)
    breaker.failure()
    breaker.failure()
    breaker.success()  # not consecutive any more
    breaker.failure()
    breaker.failure()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    breaker.failure()
    assert breaker.state is BreakerState.OPEN
    assert breaker.opened_count == 1
    assert not breaker.allow()


def test_one_probe_after_the_reset_time_then_closed_or_open_again() -> None:
    t = _Time()
    breaker = CircuitBreaker(1, 2.0, monotonic=t)
    breaker.failure()
    t.now += 1.9
    assert not breaker.allow()
    t.now += 0.2
    assert breaker.allow()  # the probe
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allow() and not breaker.allow()  # only one at a time
    breaker.failure()  # the probe failed: open again, the wait restarts
    assert breaker.state is BreakerState.OPEN
    t.now += 1.0
    assert not breaker.allow()
    t.now += 1.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.allow() and breaker.consecutive_failures == 0
    assert breaker.opened_count == 1


def test_an_abandoned_probe_frees_the_slot() -> None:
    t = _Time()
    breaker = CircuitBreaker(1, 0.5, monotonic=t)
    breaker.failure()
    t.now += 1
    assert breaker.allow()
    breaker.abandon()  # cancelled before its outcome was known
    assert breaker.allow()


def test_invalid_settings_are_rejected() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(0, 1)
    with pytest.raises(ValueError):
        CircuitBreaker(1, -1)
    with pytest.raises(ValidationError):
        BudgetConfig(breaker_failure_threshold=0)
    with pytest.raises(ValidationError):
        BudgetConfig(breaker_reset_seconds=-1)
    with pytest.raises(ValidationError):
        BudgetConfig(spool_replay_interval_seconds=0)


class _CountingFake(fakeredis.FakeAsyncRedis):  # type: ignore[misc]
    """fakeredis whose script calls can be made to fail; counts those that arrive."""

    down = False
    calls = 0

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if args and args[0] in ("EVALSHA", "EVAL"):
            self.calls += 1
            if self.down:
                raise redis_errors.ConnectionError("Connection refused (test)")
        return await super().execute_command(*args, **options)


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="DEBUG")
    yield lines
    logger.remove(sink)


def _budget(client: _CountingFake, tmp_path: Path, **extra: Any) -> BudgetManager:
    settings: dict[str, Any] = {
        "key_prefix": "brk",
        "daily_user_limit": 5,
        "breaker_failure_threshold": 3,
        "breaker_reset_seconds": 3600,
        "spool_path": tmp_path,
    }
    settings.update(extra)
    return BudgetManager(BudgetConfig(**settings), redis=client)


async def test_admission_fails_fast_without_touching_the_store(
    tmp_path: Path, log_lines: list[str]
) -> None:
    client = _CountingFake(server=fakeredis.FakeServer())
    async with _budget(client, tmp_path) as budget:
        assert await budget.check_availability("ann", None, "1")
        client.down = True
        for _ in range(3):
            with pytest.raises(BudgetUnavailableError):
                await budget.check_availability("ann", None, "1")
        assert budget.breaker.state is BreakerState.OPEN
        reached = client.calls
        for _ in range(200):
            with pytest.raises(BudgetUnavailableError, match="circuit breaker open"):
                await budget.check_availability("ann", None, "1")
            with pytest.raises(BudgetUnavailableError):
                await budget.reserve("ann", "1")
        assert client.calls == reached
    opened = [
        line for line in log_lines if "circuit breaker" in line and "opened" in line
    ]
    assert len(opened) == 1


async def test_a_successful_probe_closes_it(
    tmp_path: Path, log_lines: list[str]
) -> None:
    client = _CountingFake(server=fakeredis.FakeServer())
    async with _budget(client, tmp_path, breaker_reset_seconds=0) as budget:
        client.down = True
        for _ in range(3):
            with pytest.raises(BudgetUnavailableError):
                await budget.check_availability("bea")
        assert budget.breaker.state is BreakerState.OPEN
        client.down = False
        assert await budget.check_availability("bea")  # the probe
        assert budget.breaker.state is BreakerState.CLOSED
        for _ in range(20):
            assert await budget.check_availability("bea")
    assert (
        sum("circuit breaker" in line and "closed" in line for line in log_lines) == 1
    )
    assert sum("unreachable" in line for line in log_lines) == 1


async def test_fail_open_admits_while_the_breaker_is_open(
    tmp_path: Path, log_lines: list[str]
) -> None:
    client = _CountingFake(server=fakeredis.FakeServer())
    async with _budget(client, tmp_path, fail_open=True) as budget:
        client.down = True
        for _ in range(10):
            assert await budget.check_availability("cat", None, "100")
        assert budget.breaker.state is BreakerState.OPEN
        assert client.calls == 3
    assert sum("admitting (fail_open=True)" in line for line in log_lines) == 1


async def test_a_store_error_is_not_an_outage(tmp_path: Path) -> None:
    # Redis answered (with a bug-class error): the breaker must not count it.
    client = _CountingFake(server=fakeredis.FakeServer())
    async with _budget(client, tmp_path) as budget:
        await client.set("brk:{sg}:holds", "not a sorted set")
        for _ in range(5):
            with pytest.raises(Exception) as raised:
                await budget.check_availability("dee")
            assert not isinstance(raised.value, BudgetUnavailableError)
        assert budget.breaker.state is BreakerState.CLOSED
