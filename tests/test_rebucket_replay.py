"""A refund spooled after a rebucketing, of a charge made before it: its
replay follows the charge's record to the user's new bucket
(``Reply.MOVED``), once."""

from __future__ import annotations

from decimal import Decimal

import redis.asyncio as aioredis

from conftest import FakeClock, MakeBudget
from spendgate.core.operations import named_args
from spendgate.durability.spool import SpooledFact
from spendgate.ops.base import fingerprint, new_id
from spendgate.rebucket import rebucket


async def test_a_spooled_refund_of_an_earlier_charge_replays_in_its_new_bucket(
    make_budget: MakeBudget, redis_client: aioredis.Redis, clock: FakeClock
) -> None:
    one = make_budget()
    await one.add_credits("ada", Decimal(5))
    charge = await one.record_spend("ada", Decimal(2))
    await one.aclose()
    await rebucket(one.config, 8, redis=redis_client, clock=clock)

    eight = make_budget(cluster_buckets=8)
    now_ms = eight._now_ms()
    entry = eight.keys.id_like(new_id(now_ms), charge.entry_id)
    assert eight.keys.of_id(entry) is not eight.keys.of("ada")  # (it must follow)
    args = (
        now_ms,
        charge.entry_id,
        1_000_000,
        fingerprint("refund", charge.entry_id, 1_000_000, ""),
        entry,
        "",
        "",
    )
    fact = SpooledFact("refund", named_args("refund", args), info={})
    assert await eight._replayer.replay_one(fact) is None
    assert (await eight.get_balance("ada")).total == Decimal(4)
    # replayed again (a spool replays at least once): counted once
    assert await eight._replayer.replay_one(fact) is None
    assert (await eight.get_balance("ada")).total == Decimal(4)
    refund = await eight.refund(charge.entry_id)
    assert refund.refunded == Decimal(1)  # what is left of the charge
