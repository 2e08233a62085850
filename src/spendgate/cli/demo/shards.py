"""Step 11: a sharded keyspace (``cluster_buckets``): users spread over
buckets, each user's cap still exact."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from spendgate.cli.demo.say import PROJECT, say
from spendgate.config import BudgetConfig
from spendgate.errors import BudgetExceededError
from spendgate.manager import BudgetManager

#: the buckets of the step's deployment, and its users
BUCKETS, USERS = 8, 40


async def users_over_buckets(config: BudgetConfig) -> None:
    """Step 11: forty users of one project on eight buckets (each its own
    hash tag, so a Redis Cluster spreads them over its masters); 200
    concurrent reserves at one user's cap admit exactly what it fits; the
    project's spend is the buckets' sum."""
    sharded = config.model_copy(
        update={
            "cluster_buckets": BUCKETS,
            "key_prefix": config.key_prefix + "-shards",
            "daily_project_limit": None,
            "daily_global_limit": None,
        }
    )
    say(f"11. A sharded keyspace: {USERS} users of {PROJECT!r} on {BUCKETS} buckets.")
    async with BudgetManager(sharded) as budget:
        try:
            users = [f"user-{n}" for n in range(USERS)]
            for user in users:
                await budget.record_spend(user, Decimal("0.05"), project_id=PROJECT)
            used = {budget.keys.of(user).base for user in users}
            say(f"   their keys sit in {len(used)} of the {BUCKETS} buckets' hash tags")
            admitted = 0

            async def one() -> None:
                nonlocal admitted
                try:
                    await budget.reserve(users[0], Decimal("0.01"))
                except BudgetExceededError:
                    return
                admitted += 1

            await asyncio.gather(*(one() for _ in range(200)))
            if admitted != 95:  # (1.00 a day, 0.05 spent: 95 holds of 0.01)
                raise AssertionError(f"{admitted} reserves admitted, not 95")
            say("   200 reserves at once for one user: exactly the 95 her cap fits")
            usage = await budget.get_usage(users[1], PROJECT)
            say(
                f"   the project has spent {usage['project'].daily.spent} today: "
                "every bucket's share, added up (one script in each, at once)\n"
            )
        finally:
            await _delete_keys(budget)


async def _delete_keys(budget: BudgetManager) -> None:
    for keys in budget.keys.buckets():
        found = [k async for k in budget.redis.scan_iter(match=keys.pattern())]
        if found:
            await budget.redis.delete(*found)
