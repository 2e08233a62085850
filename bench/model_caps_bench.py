"""``check_availability`` and ``deduct`` with a per-model cap set, beside the
same calls in a deployment without per-model caps: p50 against PING's.

``python -m bench.model_caps_bench [--users N] [--calls N] [--redis-url URL]``

Two deployments on one Redis: one with ``model_caps`` on and a cap on
``gpt-4o`` in every scope a call touches (the user's, the project's and the
global one: the most a model's admission reads), one without. Timed with
PING, interleaved call by call as ``make bench`` times its own: in the first,
``check_availability`` and ``deduct`` (an amount, for every user funded) for
the capped model, and ``record_spend`` with it (a fact counts at its model
in every scope); in the second, the same three calls without a model. Each
p50 is printed in µs and as a multiple of PING's p50; the target (issue 20):
with a per-model cap, ``check_availability`` and ``deduct`` within 1.6x PING.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid

from bench.common import DEFAULT_REDIS_URL, delete_prefix
from bench.measure import Op, print_p50_against_ping

MODEL = "gpt-4o"
#: what each user is given to spend from, and the caps (never reached)
FUNDS = 10**6
CAP = 10**8


async def measure(redis_url: str, users: int, calls: int) -> None:
    from loguru import logger

    from spendgate import BudgetConfig, BudgetManager

    logger.disable("spendgate")
    prefixes = [f"sgmodels{uuid.uuid4().hex[:8]}" for _ in range(2)]
    budgets = [
        BudgetManager(
            BudgetConfig(
                redis_url=redis_url,
                key_prefix=prefix,
                daily_user_limit=10**6,
                daily_project_limit=10**9,
                daily_global_limit=10**9,
                model_caps=on,
            )
        )
        for prefix, on in zip(prefixes, (True, False), strict=True)
    ]
    capped, plain = budgets
    who = [f"u{i}" for i in range(users)]
    projects = [f"p{i}" for i in range(10)]
    try:
        for budget in budgets:
            await budget.open()
            for user in who:
                await budget.add_credits(user, FUNDS)
        await capped.set_limits("global", model=MODEL, daily=CAP, monthly=CAP)
        for user in who:
            await capped.set_limits("user", user, model=MODEL, daily=CAP)
        for project in projects:
            await capped.set_limits("project", project, model=MODEL, monthly=CAP)
        client = capped.redis

        async def ping(i: int) -> object:
            return await client.execute_command("PING")

        def calls_of(budget: BudgetManager, model: str | None) -> dict[str, Op]:
            async def check(i: int) -> object:
                user, project = who[i % users], projects[i % 10]
                return await budget.check_availability(
                    user, project, "0.01", model=model
                )

            async def deduct(i: int) -> object:
                user, project = who[i % users], projects[i % 10]
                return await budget.deduct(user, "0.001", project, model=model)

            async def record(i: int) -> object:
                user, project = who[i % users], projects[i % 10]
                return await budget.record_spend(user, "0.001", project, model)

            return {"check_availability": check, "deduct": deduct, "record": record}

        ops: dict[str, Op] = {"PING": ping}
        for name, op in calls_of(capped, MODEL).items():
            ops[f"{name}, model capped"] = op
        for name, op in calls_of(plain, None).items():
            ops[f"{name}, model_caps off"] = op
        await print_p50_against_ping(ops, calls)
    finally:
        for budget, prefix in zip(budgets, prefixes, strict=True):
            await delete_prefix(budget.redis, prefix)
            await budget.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.model_caps_bench")
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    args = parser.parse_args()
    asyncio.run(measure(args.redis_url, args.users, args.calls))


if __name__ == "__main__":
    main()
