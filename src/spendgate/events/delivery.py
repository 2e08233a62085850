"""Delivering one event to its targets: attempts, backoff, and what failed.

Each target is tried up to ``max_attempts`` times, waiting after the n-th
failure ``backoff_seconds * 2**(n-1)`` (at most ``max_backoff_seconds``,
with jitter: between half and all of it). The targets of one event are
tried at the same time, each on its own: a handler that keeps failing
delays neither the webhook nor the other handlers of that event.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from loguru import logger

from spendgate.config import BudgetConfig
from spendgate.events.model import Event
from spendgate.events.targets import Target

#: waits between attempts; raises to abort (the dispatcher is stopping)
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often, and how far apart, one event is tried on one target."""

    #: attempts before the event is dead-lettered for that target
    max_attempts: int = 5
    #: the wait after the first failure, seconds (doubled after each)
    backoff_seconds: float = 0.5
    #: the longest wait, seconds
    max_backoff_seconds: float = 30.0

    @classmethod
    def from_config(cls, config: BudgetConfig) -> RetryPolicy:
        return cls(
            config.events_max_attempts,
            config.events_backoff_seconds,
            config.events_max_backoff_seconds,
        )

    def delay(self, failures: int) -> float:
        """The wait after ``failures`` failed attempts in a row, seconds."""
        exponent = min(failures - 1, 32)
        full = min(self.max_backoff_seconds, self.backoff_seconds * float(2**exponent))
        # Jitter: receivers that failed together are not retried together.
        return full * (0.5 + random.random() / 2)


class Failure(NamedTuple):
    """A target that did not take an event after every attempt."""

    target: Target
    attempts: int
    #: the last error, as text
    error: str


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def attempt(
    target: Target, event: Event, policy: RetryPolicy, sleep: Sleep
) -> Failure | None:
    """Deliver ``event`` to ``target``, retrying with backoff; the failure
    once every attempt failed, ``None`` once it was taken."""
    error = ""
    for n in range(1, policy.max_attempts + 1):
        try:
            await target.deliver(event)
            return None
        except Exception as exc:  # any failure of a handler is retried
            error = _describe(exc)
        if n == policy.max_attempts:
            break
        delay = policy.delay(n)
        logger.info(
            "spendgate events: {} failed on {} {} (attempt {} of {}: {}); "
            "retrying in {:.2f}s",
            target.name,
            event.type,
            event.id,
            n,
            policy.max_attempts,
            error,
            delay,
        )
        await sleep(delay)
    return Failure(target, policy.max_attempts, error)


async def deliver(
    event: Event, targets: Sequence[Target], policy: RetryPolicy, sleep: Sleep
) -> list[Failure]:
    """Deliver ``event`` to every target at once; the targets that did not
    take it. Cancelled or aborted, it cancels every attempt in progress."""
    if len(targets) == 1:
        failure = await attempt(targets[0], event, policy, sleep)
        return [] if failure is None else [failure]
    tasks = [
        asyncio.create_task(attempt(target, event, policy, sleep)) for target in targets
    ]
    try:
        outcomes = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return [failure for failure in outcomes if failure is not None]
