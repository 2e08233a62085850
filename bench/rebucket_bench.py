"""How long a rebucketing takes: ``python -m bench.rebucket_bench``.

Against the machine's real Redis, in a key prefix of its own (deleted
afterwards): ``--users`` users each given a credit and ``--charges``
charges of one project (so each has a balance and grant, day and month
counters, refund records, idempotency records), then the keys moved from
1 bucket to ``--to`` and back to 1, each timed end to end (the checks'
pass and the moves' pass) with the keys per second it moved. A dry run
of the first move is timed too: the checks alone cost about as much as
that. Not part of ``make bench``: an operator's one-off, not the hot path.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from decimal import Decimal
from typing import Any

from bench.common import delete_prefix

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/9"


async def _populate(config: Any, users: int, charges: int) -> None:
    from spendgate import BudgetManager

    async with BudgetManager(config) as budget:
        gate = asyncio.Semaphore(128)

        async def one(n: int) -> None:
            async with gate:
                user = f"user-{n}"
                await budget.add_credits(user, Decimal(100), idempotency_key=f"c{n}")
                for c in range(charges):
                    await budget.record_spend(
                        user, Decimal("0.01"), "chatbot", idempotency_key=f"r{n}-{c}"
                    )

        await asyncio.gather(*(one(n) for n in range(users)))


async def _timed(config: Any, to: int, dry_run: bool = False) -> tuple[float, Any]:
    from spendgate.rebucket import rebucket

    start = time.perf_counter()
    report = await rebucket(config, to, dry_run=dry_run)
    return time.perf_counter() - start, report


async def main(redis_url: str, users: int, charges: int, to: int) -> None:
    from spendgate import BudgetConfig

    prefix = f"bench-rebucket-{uuid.uuid4().hex[:8]}"
    one = BudgetConfig(
        redis_url=redis_url,
        key_prefix=prefix,
        daily_user_limit=None,
        daily_project_limit=None,
        daily_global_limit=None,
    )
    many = one.model_copy(update={"cluster_buckets": to})
    try:
        await _populate(one, users, charges)
        rows = []
        for label, config, target, dry in (
            (f"1 -> {to} (dry run)", one, to, True),
            (f"1 -> {to}", one, to, False),
            (f"{to} -> 1", many, 1, False),
        ):
            seconds, report = await _timed(config, target, dry)
            touched = report.moved + report.copied + report.forwarded
            rows.append((label, seconds, report.moved, report.copied, touched))
        print(f"{users} users × {charges} charges, Redis {redis_url}")
        print("| move | seconds | keys moved | records copied | keys/s |")
        print("|---|---:|---:|---:|---:|")
        for label, seconds, moved, copied, touched in rows:
            print(
                f"| {label} | {seconds:.2f} | {moved} | {copied} "
                f"| {touched / seconds:,.0f} |"
            )
    finally:
        from redis.asyncio import Redis

        client = Redis.from_url(redis_url)
        await delete_prefix(client, prefix)
        await client.aclose()


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--charges", type=int, default=3)
    parser.add_argument("--to", type=int, default=16)
    return parser.parse_args()


if __name__ == "__main__":
    args = _args()
    asyncio.run(main(args.redis_url, args.users, args.charges, args.to))
