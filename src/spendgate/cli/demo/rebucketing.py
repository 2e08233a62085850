"""Step 12: moving a deployment to more buckets (``spendgate rebucket``):
every balance, counter, retry and refund comes out as it was."""

from __future__ import annotations

from decimal import Decimal

from spendgate.cli.demo.say import PROJECT, say
from spendgate.config import BudgetConfig
from spendgate.manager import BudgetManager
from spendgate.rebucket import rebucket

#: the step's users, and the buckets it moves them to
USERS, BUCKETS = 12, 8
LUNCH = Decimal("0.25")


async def more_buckets(config: BudgetConfig) -> None:
    """Step 12: twelve users spend on one bucket; the keys move to eight;
    the same balances and project spend, a retried fact answered as
    before, a refund of a charge made before the move."""
    one = config.model_copy(
        update={
            "cluster_buckets": 1,
            "key_prefix": config.key_prefix + "-rebucket",
            "daily_project_limit": Decimal(5),
            "daily_global_limit": None,
            "per_minute_caps": False,
        }
    )
    eight = one.model_copy(update={"cluster_buckets": BUCKETS})
    say(f"12. Moving the keys from 1 bucket to {BUCKETS}: spendgate rebucket.")
    users = [f"user-{n}" for n in range(USERS)]
    try:
        async with BudgetManager(one) as budget:
            for user in users:
                await budget.add_credits(user, Decimal(1), idempotency_key=f"{user}-in")
                lunch = await budget.record_spend(
                    user, LUNCH, PROJECT, idempotency_key=f"{user}-lunch"
                )
        report = await rebucket(one, BUCKETS)
        say(
            f"   {report.moved} keys moved to their user's bucket, the project's "
            f"counters split over the buckets ({report.merged}), "
            f"{report.forwarded} charge records forwarded"
        )
        async with BudgetManager(eight) as budget:
            for user in users:
                balance = (await budget.get_balance(user)).total
                if balance != 1 - LUNCH:
                    raise AssertionError(f"{user}: balance {balance}")
            again = await budget.record_spend(
                users[-1], LUNCH, PROJECT, idempotency_key=f"{users[-1]}-lunch"
            )
            refund = await budget.refund(lunch.entry_id)
            spent = (await budget.get_usage(users[0], PROJECT))["project"].daily.spent
            if not again.replayed or spent != USERS * LUNCH - LUNCH:
                raise AssertionError(f"replayed {again.replayed}, spent {spent}")
            say(
                f"   every balance is still {1 - LUNCH}; a retried lunch is answered "
                "as before (nothing charged); the refund of one made before the "
                f"move gives back {refund.refunded}; the project has spent {spent}\n"
            )
    finally:
        await _delete_keys(eight)


async def _delete_keys(config: BudgetConfig) -> None:
    budget = BudgetManager(config)  # (not opened: a layout it refuses is fine here)
    try:
        for keys in budget.keys.stream_homes():
            found = [k async for k in budget.redis.scan_iter(match=keys.pattern())]
            if found:
                await budget.redis.delete(*found)
    finally:
        await budget.aclose()
