"""Step 11: a sharded keyspace (``cluster_buckets``): users spread over
buckets, each user's cap still exact, and the project's cap never passed
(lent to the buckets: escrow)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from spendgate.cli.demo.say import PROJECT, say
from spendgate.config import BudgetConfig
from spendgate.errors import BudgetExceededError
from spendgate.manager import BudgetManager

#: the buckets of the step's deployment, and its users
BUCKETS, USERS = 8, 40
#: the project's daily cap in this step
PROJECT_CAP = Decimal(3)


async def users_over_buckets(config: BudgetConfig) -> None:
    """Step 11: forty users of one project on eight buckets (each its own
    hash tag, so a Redis Cluster spreads them over its masters); 200
    concurrent reserves at one user's cap admit exactly what it fits, and
    200 over every bucket at the project's cap never more than that fits;
    the project's spend is the buckets' sum."""
    sharded = config.model_copy(
        update={
            "cluster_buckets": BUCKETS,
            "key_prefix": config.key_prefix + "-shards",
            "daily_project_limit": PROJECT_CAP,
            "daily_global_limit": None,
            "escrow_chunk": Decimal("0.2"),
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
            admitted = await _admitted(budget, [users[0]] * 200, None)
            if admitted != 95:  # (1.00 a day, 0.05 spent: 95 holds of 0.01)
                raise AssertionError(f"{admitted} reserves admitted, not 95")
            say("   200 reserves at once for one user: exactly the 95 her cap fits")
            # the project: 3.00 a day, 2.00 spent (the holds above name none)
            calls = [users[1 + n % 39] for n in range(200)]
            shared = await _admitted(budget, calls, PROJECT)
            if not 0 < shared <= 100:  # (never past the cap; fewer only if a
                # call kept finding its bucket short: the README's bounds)
                raise AssertionError(f"{shared} reserves admitted of the 100")
            say(
                f"   the project's cap of {PROJECT_CAP} a day, lent to the buckets in"
                " chunks of 0.2 (escrow): 200 reserves at once over every bucket"
                f" admit {shared} of 0.01, never more than the 100 its 1.00 left"
                " fits"
            )
            usage = await budget.get_usage(users[1], PROJECT)
            say(
                f"   the project has spent {usage['project'].daily.spent} today: "
                "every bucket's share, added up (one script in each, at once)\n"
            )
        finally:
            await _delete_keys(budget)


async def _admitted(
    budget: BudgetManager, users: list[str], project: str | None
) -> int:
    """How many reserves of 0.01, one per entry of ``users``, all sent at
    once, are admitted."""

    async def one(user: str) -> bool:
        try:
            await budget.reserve(user, Decimal("0.01"), project_id=project)
        except BudgetExceededError:
            return False
        return True

    return sum(await asyncio.gather(*(one(user) for user in users)))


async def _delete_keys(budget: BudgetManager) -> None:
    for keys in budget.keys.stream_homes():  # (the root's escrow loans too)
        found = [k async for k in budget.redis.scan_iter(match=keys.pattern())]
        if found:
            await budget.redis.delete(*found)
