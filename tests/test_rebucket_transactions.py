"""``list_transactions`` without Postgres after rebucketings: a user's
entries written before a move stay in the ledger stream of their old home
(the root's with one bucket, the old bucket's while it remains), and are
listed with those of the new one, newest first.

How: budgets of the ``make_budget`` fixture (the real Redis and fakeredis)
with no Postgres; a user charged on one bucket, moved to 4 buckets
(``spendgate.rebucket``) and charged there, moved to 8 (its bucket of 4
stays, another is now its own) and charged again, each charge a second
after the last.
"""

from __future__ import annotations

from decimal import Decimal

import redis.asyncio as aioredis

from conftest import FakeClock, MakeBudget
from spendgate.core.shards import bucket_of
from spendgate.rebucket import rebucket


async def test_entries_from_before_a_rebucketing_are_listed(
    make_budget: MakeBudget, redis_client: aioredis.Redis, clock: FakeClock
) -> None:
    # (eve: bucket 2 of 4, a bucket that stays going to 8, where eve is in 6)
    assert (bucket_of("eve", 4), bucket_of("eve", 8)) == (2, 6)
    charged = []
    for buckets, to in ((1, 4), (4, 8), (8, None)):
        budget = make_budget(cluster_buckets=buckets)
        clock.advance(1)
        charged.append(await budget.record_spend("eve", Decimal(buckets)))
        await budget.record_spend("bob", Decimal("0.5"))
        if to is not None:
            await budget.aclose()
            await rebucket(budget.config, to, redis=redis_client, clock=clock)

    rows = await budget.list_transactions("eve")
    assert [(r.entry_id, r.amount) for r in rows] == [
        (c.entry_id, c.amount) for c in reversed(charged)
    ]
    assert [r.amount for r in await budget.list_transactions("eve", limit=2)] == [
        Decimal(8),
        Decimal(4),
    ]
