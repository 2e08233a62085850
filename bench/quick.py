"""``python -m bench.quick``: a short look at the hot path on any Redis.

Times ``check_availability``, ``record_spend`` and ``reserve`` + ``settle``
against a bare ``PING`` through the same client, sequentially and
interleaved call by call (as ``make bench`` does), without the peer and
without writing results. The full comparison is ``make bench``. Runs under a
key prefix of its own, deleted afterwards; exits 4 when Redis does not
answer (spendgate's "unavailable").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid
from decimal import Decimal

from bench.common import DEFAULT_REDIS_URL, delete_prefix
from bench.measure import Op, interleaved_samples

#: calls of each operation before timing starts (connections, scripts)
WARM_UP = 50


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.quick",
        description="time the hot path against a bare PING on your Redis (short; "
        "the full comparison with the peer is `make bench`)",
    )
    parser.add_argument(
        "--redis-url",
        default=None,
        help=f"default: SPENDGATE_REDIS_URL, else {DEFAULT_REDIS_URL}",
    )
    parser.add_argument(
        "--samples",
        type=_positive,
        default=2000,
        help="calls per operation, at least 1 (default 2000)",
    )
    parser.add_argument(
        "--cap-actions",
        action="store_true",
        help="with cap actions on, every user's caps warn and every project's "
        "and the global one's notify (their charges read the overrides and "
        "the counters of each scope, and check the thresholds)",
    )
    return parser.parse_args(argv)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count of at least 1")
    return value


def main(argv: list[str] | None = None) -> int:
    """Run the quick bench; returns the exit code."""
    args = parse_args(argv)
    url = args.redis_url or os.environ.get("SPENDGATE_REDIS_URL") or DEFAULT_REDIS_URL
    return asyncio.run(quick(url, args.samples, cap_actions=args.cap_actions))


async def quick(url: str, samples: int, *, cap_actions: bool = False) -> int:
    """Time ``samples`` calls of each operation on ``url`` and print the table
    (``cap_actions``: with every scope's caps warning or notifying)."""
    from redis.exceptions import RedisError

    from spendgate import BudgetConfig, BudgetManager
    from spendgate.config import redact_url
    from spendgate.errors import ExitCode

    prefix = f"sgquick{uuid.uuid4().hex[:8]}"
    config = BudgetConfig(
        redis_url=url,
        key_prefix=prefix,
        daily_user_limit=Decimal(1000),
        daily_project_limit=Decimal(10**9),
        daily_global_limit=Decimal(10**9),
        cap_actions=cap_actions,
    )
    budget = BudgetManager(config)
    client = budget.redis
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        print(f"bench.quick: Redis at {redact_url(url)} did not answer: {exc}")
        await budget.aclose()
        return ExitCode.UNAVAILABLE

    async def ping(i: int) -> object:
        return await client.execute_command("PING")  # type: ignore[no-untyped-call]

    async def check(i: int) -> object:
        return await budget.check_availability(f"u{i % 100}", f"p{i % 10}", 0.01)

    async def record(i: int) -> object:
        return await budget.record_spend(f"u{i % 100}", 0.002, f"p{i % 10}")

    async def reserve_settle(i: int) -> object:
        lease = await budget.reserve(f"u{i % 100}", 0.01, f"p{i % 10}")
        return await budget.settle(lease, 0.002)

    ops: dict[str, Op] = {
        "PING (floor)": ping,
        "check_availability": check,
        "record_spend": record,
        "reserve+settle": reserve_settle,
    }
    try:
        await budget.open()
        if cap_actions:
            for i in range(100):
                await budget.set_limits("user", f"u{i}", action="warn")
            for i in range(10):
                await budget.set_limits("project", f"p{i}", action="notify")
            await budget.set_limits("global", action="notify")
        for op in ops.values():
            for i in range(WARM_UP):
                await op(i)
        timings = await interleaved_samples(ops, samples)
    finally:
        await delete_prefix(client, prefix)
        await budget.aclose()
    where = redact_url(url) + (" with cap actions" if cap_actions else "")
    _print_table(timings, samples, where)
    return ExitCode.OK


def _print_table(timings: dict[str, list[int]], samples: int, where: str) -> None:
    def pct(values: list[int], p: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))] / 1000

    floor = pct(timings["PING (floor)"], 0.5)
    print(f"bench.quick: {samples} sequential calls each on {where}")
    print(f"{'operation':<20} {'p50 µs':>8} {'p99 µs':>8} {'p50 × PING':>11}")
    for name, values in timings.items():
        p50 = pct(values, 0.5)
        print(f"{name:<20} {p50:8.0f} {pct(values, 0.99):8.0f} {p50 / floor:10.2f}×")
    print("reserve+settle is two round trips. Full comparison: make bench")


if __name__ == "__main__":
    sys.exit(main())
