"""A user holding 1,000 grants: ``check_availability`` and ``record_spend``
p50 against PING's, beside users holding one plain balance.

``python -m bench.grants_bench [--users N] [--grants N] [--calls N]
[--redis-url URL]``

Balances are enforced (admission reads the balance), each grant user holds
``--grants`` grants (half of them expiring in 30 days, priorities 0 to 3),
the others a balance made before grants (one plain key). The four calls and
PING are timed interleaved, call by call, as ``make bench`` times its own;
each p50 is printed in µs and as a multiple of PING's p50. The target (issue
18): within 2x PING for the grant users.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from bench.common import CHECK_COST, DEFAULT_REDIS_URL, RECORD_COST, delete_prefix
from bench.measure import Op, print_p50_against_ping


async def measure(redis_url: str, users: int, grants: int, calls: int) -> None:
    from loguru import logger

    from spendgate import BudgetConfig, BudgetManager

    logger.disable("spendgate")
    prefix = f"sggrants{uuid.uuid4().hex[:8]}"
    config = BudgetConfig(
        redis_url=redis_url,
        key_prefix=prefix,
        enforce_balance=True,
        daily_user_limit=10**6,
        daily_project_limit=10**9,
        daily_global_limit=10**9,
    )
    budget = BudgetManager(config)
    await budget.open()
    client = budget.redis
    holders = [f"grants-{i}" for i in range(users)]
    plain = [f"plain-{i}" for i in range(users)]
    try:
        expires = datetime.now(UTC) + timedelta(days=30)
        for user in holders:
            for chunk in range(0, grants, 200):
                await asyncio.gather(
                    *(
                        budget.add_credits(
                            user,
                            1000,
                            expires_at=expires if g % 2 else None,
                            priority=g % 4,
                        )
                        for g in range(chunk, min(grants, chunk + 200))
                    )
                )
        for user in plain:  # a balance from before grants: one integer key
            await client.set(budget.keys.balance(user), str(10**12))

        async def ping(i: int) -> object:
            return await client.execute_command("PING")

        def check(who: list[str]) -> Op:
            async def op(i: int) -> object:
                return await budget.check_availability(who[i % users], None, CHECK_COST)

            return op

        def record(who: list[str]) -> Op:
            async def op(i: int) -> object:
                return await budget.record_spend(who[i % users], RECORD_COST)

            return op

        ops = {
            "PING": ping,
            f"check_availability, {grants} grants": check(holders),
            f"record_spend, {grants} grants": record(holders),
            "check_availability, plain balance": check(plain),
            "record_spend, plain balance": record(plain),
        }
        await print_p50_against_ping(ops, calls)
        left = (await budget.get_balance(holders[0])).grants
        print(f"(a grant user still holds {len(left)} grants)")
    finally:
        await delete_prefix(client, prefix)
        await budget.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.grants_bench")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--grants", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    args = parser.parse_args()
    asyncio.run(measure(args.redis_url, args.users, args.grants, args.calls))


if __name__ == "__main__":
    main()
