"""``deduct`` for users on a plan with rate overrides, beside users on no plan
and a deployment without plans: p50 against PING's.

``python -m bench.plans_bench [--users N] [--calls N] [--redis-url URL]``

The bench's 5-dimension price book is active with one plan (bursar's README
shape: a ``_default`` rate override) set with ``set_plan``; half the users
are on it. Three deducts are timed with PING, interleaved call by call, as
``make bench`` times its own: a plan's user (priced with the overrides, the
script checking the user's plan and drawing on its free allowance before the
balance, in the same script), a user on no plan in the same deployment (the
same check: one GET more), and a user of a second deployment that has no
plan at all (nothing read or sent about plans). Each p50 is printed in µs and
as a multiple of PING's p50; the target ("Priced usage"): deduct within 1.6x
PING.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid

from bench.common import DEFAULT_REDIS_URL, delete_prefix
from bench.deduct_workload import FUNDS, PRICE_BOOK, usage
from bench.measure import Op, print_p50_against_ping


async def measure(redis_url: str, users: int, calls: int) -> None:
    from loguru import logger

    from spendgate import BudgetConfig, BudgetManager

    logger.disable("spendgate")
    prefixes = [f"sgplans{uuid.uuid4().hex[:8]}" for _ in range(2)]
    budgets = [
        BudgetManager(
            BudgetConfig(
                redis_url=redis_url,
                key_prefix=prefix,
                daily_user_limit=10**6,
                daily_project_limit=10**9,
                daily_global_limit=10**9,
            )
        )
        for prefix in prefixes
    ]
    planned, plain = budgets
    on_plan = [f"plan-{i}" for i in range(users)]
    no_plan = [f"none-{i}" for i in range(users)]
    try:
        for budget in budgets:
            await budget.open()
            await budget.publish_pricing(PRICE_BOOK, label="bench")
        await planned.set_plan(
            "pro",
            free_allowance=500,
            rate_overrides={"_default": "input_tokens * 0.000002"},
        )
        for user in on_plan:
            await planned.assign_plan(user, "pro")
            await planned.add_credits(user, FUNDS)
        for user in no_plan:
            await planned.add_credits(user, FUNDS)
            await plain.add_credits(user, FUNDS)
        client = planned.redis
        metrics = usage()

        async def ping(i: int) -> object:
            return await client.execute_command("PING")

        def deduct(budget: BudgetManager, who: list[str]) -> Op:
            async def op(i: int) -> object:
                return await budget.deduct(who[i % users], metrics)

            return op

        ops = {
            "PING": ping,
            "deduct, a plan's user": deduct(planned, on_plan),
            "deduct, no plan (plans exist)": deduct(planned, no_plan),
            "deduct, no plans anywhere": deduct(plain, no_plan),
        }
        await print_p50_against_ping(ops, calls)
    finally:
        for budget, prefix in zip(budgets, prefixes, strict=True):
            await delete_prefix(budget.redis, prefix)
            await budget.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.plans_bench")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    args = parser.parse_args()
    asyncio.run(measure(args.redis_url, args.users, args.calls))


if __name__ == "__main__":
    main()
