"""What the hypothesis state machines over a BudgetManager share
(tests/test_model_based.py, tests/test_money_invariants.py): an event loop of
their own, a fake clock, a key prefix, a client of the backend (real Redis or
fakeredis), and a teardown that closes the manager and deletes the prefix's
keys."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

import fakeredis
import redis.asyncio as aioredis
from hypothesis.stateful import RuleBasedStateMachine

from conftest import REDIS_URL, FakeClock
from spendgate import BudgetManager


class AsyncBudgetMachine(RuleBasedStateMachine):
    """A state machine's plumbing: ``backend`` ``"redis"`` or
    ``"fakeredis"``; the subclass's ``setup`` sets ``budget``."""

    backend = "fakeredis"

    def __init__(self, start: datetime, prefix: str) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clock = FakeClock(start)
        self.prefix = f"{prefix}{uuid.uuid4().hex[:12]}"
        if self.backend == "redis":
            self.client: aioredis.Redis = aioredis.Redis.from_url(
                REDIS_URL, socket_timeout=5
            )
        else:
            self.client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        self.budget: BudgetManager | None = None

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    @property
    def b(self) -> BudgetManager:
        assert self.budget is not None
        return self.budget

    def teardown(self) -> None:
        async def close() -> None:
            if self.budget is not None:
                await self.budget.aclose()
            if self.backend == "redis":
                keys = [
                    k
                    async for k in self.client.scan_iter(
                        match=f"{self.prefix}:*", count=5000
                    )
                ]
                if keys:
                    await self.client.delete(*keys)
            await self.client.aclose()

        try:
            self.run(close())
        finally:
            self.loop.close()
