"""What the event tests share (tests/test_events.py,
tests/test_events_recovery.py, and the other event test files): ``FAST``,
settings that make retries quick; ``until``, a
bounded wait on a state (never on a duration); ``add_event``, which appends
an event to the events stream with the protocol's fields, as a script
would; ``config_of``, a manager's settings with ``FAST`` and more;
``_xlen_is``, whether a stream holds so many entries."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from spendgate import BudgetConfig, BudgetManager
from spendgate.core.keys import Keys
from spendgate.core.protocol import EVENT_FIELDS, EventType

#: settings that make retries quick
FAST = {
    "events_backoff_seconds": 0.001,
    "events_max_backoff_seconds": 0.005,
}


async def until(check: Callable[[], Awaitable[Any] | Any], what: str) -> None:
    """Wait (bounded) until ``check()`` is true."""
    for _ in range(2000):
        outcome = check()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


async def add_event(
    redis: aioredis.Redis,
    keys: Keys,
    kind: str = EventType.CAP_REACHED,
    **values: Any,
) -> str:
    """Append an event as a script would (the protocol's fields); its id."""
    attrs = {
        "type": kind,
        "occurred_at": 1_773_576_000_000,
        "user_id": "ada",
        "scope": "user",
        "scope_id": "ada",
        "window": "daily",
        "data": json.dumps({"limit": "10", "threshold": 1.0}),
        **values,
    }
    fields = {f.name: attrs[f.attribute] for f in EVENT_FIELDS if f.attribute in attrs}
    sid = await redis.xadd(keys.events, fields)  # type: ignore[arg-type]
    return sid.decode()


def config_of(budget: BudgetManager, **settings: Any) -> BudgetConfig:
    return budget.config.model_copy(update={**FAST, **settings})


async def _xlen_is(redis: aioredis.Redis, key: str, n: int) -> bool:
    return int(await redis.xlen(key)) == n
