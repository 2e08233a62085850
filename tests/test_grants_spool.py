"""Grants and refunds are facts: spooled while Redis is down, replayed once.

How: the switchable client of ``spool_helpers`` (its ``flaky`` fixture: real
Redis and fakeredis) refuses every script while "down"; a credit with its
grant terms and a refund are spooled, then replayed when it is back, and a
refund Redis refuses on replay goes to the dead letters.
"""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import redis.asyncio as aioredis

from conftest import FakeClock
from spendgate.durability.spool import decode_fact
from spool_helpers import _drained, _manager, _Switch, flaky

__all__ = ["flaky"]  # (the fixture, used by name)


async def test_a_spooled_grant_and_refund_replay_once(
    flaky: tuple[aioredis.Redis, _Switch, str], tmp_path: Path
) -> None:
    _, switch, _ = flaky
    async with _manager(flaky, tmp_path) as budget:
        clock = budget._clock
        assert isinstance(clock, FakeClock)
        spent = await budget.record_spend("ada", 3)
        switch.mode = "down"
        promo = await budget.add_credits(
            "ada", 2, kind="promo", priority=0, expires_at=clock.now + timedelta(1)
        )
        refund = await budget.refund(spent.entry_id, 1, idempotency_key="r1")
        assert promo.spooled and promo.balance is None
        assert refund.spooled and refund.refunded == 1 and refund.balance_after is None
        switch.mode = "ok"
        await _drained(budget)
        balance = await budget.get_balance("ada")
        # (balances are not enforced and ada had none: the spend took nothing
        # off a balance, so its refund gives nothing back to one)
        assert balance.total == Decimal(2)
        assert [(g.kind, g.remaining) for g in balance.grants] == [("promo", 2)]
        assert (await budget.get_usage("ada"))["user"].daily.spent == 2
        again = await budget.refund(spent.entry_id, 1, idempotency_key="r1")
        assert again.replayed and again.entry_id == refund.entry_id


async def test_a_refund_refused_on_replay_goes_to_the_dead_letters(
    flaky: tuple[aioredis.Redis, _Switch, str], tmp_path: Path
) -> None:
    _, switch, _ = flaky
    async with _manager(flaky, tmp_path) as budget:
        spent = await budget.record_spend("ada", 1)
        switch.mode = "down"
        assert (await budget.refund(spent.entry_id, 2)).spooled  # above the charge
        assert (await budget.refund("0" * 28)).spooled  # no such charge
        switch.mode = "ok"
        await _drained(budget)
        spool = budget.spool
        assert spool is not None and spool.dead_letters == 2
        lines = (spool.directory / "dead.log").read_text().splitlines()
        dead = [json.loads(line) for line in lines]
        assert ["above" in dead[0]["reason"], "no refundable" in dead[1]["reason"]] == [
            True,
            True,
        ]
        fact = decode_fact(dead[0]["record"].encode())
        assert fact is not None and fact.operation == "refund"
        assert (await budget.get_usage("ada"))["user"].daily.spent == 1
