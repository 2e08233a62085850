"""A ``deduct`` spooled while Redis was away, then retried with its key.

``deduct(..., spool_when_unavailable=True)`` records its charge as a fact
when Redis does not answer. A caller that retries the same deduct with the
same idempotency key (a job queue redelivering the job, say) must meet that
charge again, whichever reaches Redis first: the spool's replay of the fact,
or the retry. Money moves once, the retry is answered as a replay (not an
``IdempotencyConflictError``), and the spool leaves no dead letter.

How: ``spool_helpers``' switchable client (real Redis and fakeredis) is put
"down" for the first deduct; the spool's own replay loop is kept from
starting, and the test replays the spool by hand before or after the retry.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from spendgate import BudgetManager
from spool_helpers import _manager, _Switch, flaky

__all__ = ["flaky"]  # (the fixture, used by name)


async def _replay_spool(budget: BudgetManager) -> None:
    spool = budget.spool
    assert spool is not None
    assert await spool.replay(budget._replayer.replay_one)
    assert (spool.depth, spool.dead_letters) == (0, 0)


async def _spooled(budget: BudgetManager, switch: _Switch, **call: Any) -> Any:
    budget._replayer._ensure_running = lambda: None  # type: ignore[method-assign]
    switch.mode = "down"
    first = await budget.deduct("ada", "4", idempotency_key="job-7", **call)
    switch.mode = "ok"
    assert first.spooled and first.amount == Decimal(4)
    return first


@pytest.mark.parametrize("replay_first", [True, False], ids=["replay", "retry"])
async def test_a_spooled_deduct_and_its_retry_charge_once(
    flaky: tuple[aioredis.Redis, _Switch, str], tmp_path: Path, replay_first: bool
) -> None:
    _, switch, _ = flaky
    async with _manager(flaky, tmp_path) as budget:
        await budget.add_credits("ada", 10)
        first = await _spooled(budget, switch, spool_when_unavailable=True)
        if replay_first:
            await _replay_spool(budget)
        retry = await budget.deduct(
            "ada", "4", idempotency_key="job-7", spool_when_unavailable=True
        )
        if not replay_first:
            await _replay_spool(budget)
        assert (retry.replayed, retry.amount) == (replay_first, Decimal(4))
        if replay_first:  # the retry meets the fact: its entry, no balance
            assert (retry.entry_id, retry.balance_after) == (first.entry_id, None)
        assert (await budget.get_balance("ada")).total == Decimal(6)
        usage = await budget.get_usage("ada")
        assert usage["user"].daily.spent == Decimal(4)
        # and a third try, now that both are in, is still the one charge
        again = await budget.deduct("ada", "4", idempotency_key="job-7")
        assert again.replayed and again.entry_id == retry.entry_id
        assert (await budget.get_balance("ada")).total == Decimal(6)


async def test_a_spooled_deduct_key_reused_for_another_charge_conflicts(
    flaky: tuple[aioredis.Redis, _Switch, str], tmp_path: Path
) -> None:
    from spendgate import IdempotencyConflictError

    _, switch, _ = flaky
    async with _manager(flaky, tmp_path) as budget:
        await budget.add_credits("ada", 10)
        await _spooled(budget, switch, spool_when_unavailable=True)
        await _replay_spool(budget)
        with pytest.raises(IdempotencyConflictError):
            await budget.deduct("ada", "5", idempotency_key="job-7")
        with pytest.raises(IdempotencyConflictError):  # a fact is not this deduct
            await budget.record_spend("ada", 4, idempotency_key="job-7")
        assert (await budget.get_balance("ada")).total == Decimal(6)


@pytest.mark.parametrize("replay_first", [True, False], ids=["replay", "retry"])
async def test_a_spooled_team_deduct_and_its_retry_charge_the_pool_once(
    flaky: tuple[aioredis.Redis, _Switch, str], tmp_path: Path, replay_first: bool
) -> None:
    _, switch, _ = flaky
    async with _manager(flaky, tmp_path) as budget:
        await budget.create_team("eng", initial_balance=10)
        await budget.add_team_member("eng", "ada")
        first = await _spooled(
            budget, switch, team_id="eng", spool_when_unavailable=True
        )
        if replay_first:
            await _replay_spool(budget)
        retry = await budget.deduct("ada", "4", team_id="eng", idempotency_key="job-7")
        if not replay_first:
            await _replay_spool(budget)
        assert (retry.replayed, retry.amount, retry.team_id) == (
            replay_first,
            Decimal(4),
            "eng",
        )
        if replay_first:
            assert (retry.entry_id, retry.balance_after) == (first.entry_id, None)
        else:
            assert retry.balance_after == Decimal(6)
        team = await budget.get_team("eng")
        assert (team.balance, team.members["ada"].spent_today) == (6, 4)
        spent = await budget.record_spend(
            "ada", 1, team_id="eng", idempotency_key="job-8"
        )
        again = await budget.record_spend(
            "ada", 1, team_id="eng", idempotency_key="job-8"
        )
        assert again.replayed and again.occurred_ms == spent.occurred_ms
