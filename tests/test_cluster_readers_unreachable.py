"""The stream readers on a Redis Cluster none of whose nodes answers: the
flusher and the event dispatcher wait and try again, as on a single Redis,
rather than end.

How: each started with ``redis_cluster=True`` and a URL naming a port
nothing listens on (redis-py's ``RedisCluster`` then raises its own
``RedisClusterUnreachableError``, not a ``ConnectionError``); checked
once it has failed twice: still running, the failure recorded
(``last_error``), and stopped cleanly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from cli_helpers import _dead_port
from spendgate import BudgetConfig
from spendgate.events.dispatcher import EventDispatcher
from spendgate.events.targets import EventHandlers
from spendgate.ledger.flusher import Flusher


def _config() -> BudgetConfig:
    return BudgetConfig(
        redis_url=f"redis://127.0.0.1:{_dead_port()}",
        redis_cluster=True,
        postgres_dsn="postgresql://127.0.0.1/test",
        key_prefix="unreachable",
    )


async def _keeps_trying(reader: Any, failed: Callable[[], bool]) -> None:
    task = asyncio.create_task(reader.run())
    for _ in range(200):  # (its back-off starts at a fraction of a second)
        if task.done() or failed():
            break
        await asyncio.sleep(0.05)
    assert not task.done(), task.exception()
    assert failed() and "Cluster" in reader.last_error
    reader.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_the_flusher_waits_for_the_cluster() -> None:
    flusher = Flusher(_config())
    await _keeps_trying(flusher, lambda: flusher.consecutive_failures >= 2)


async def test_the_dispatcher_waits_for_the_cluster() -> None:
    dispatcher = EventDispatcher(_config(), handlers=EventHandlers())
    await _keeps_trying(dispatcher, lambda: dispatcher.last_error is not None)
