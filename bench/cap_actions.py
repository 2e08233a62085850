"""``python -m bench.cap_actions``: what cap actions cost the hot path.

Times ``check_availability`` and ``record_spend`` on three deployments of
this checkout, interleaved call by call with a bare ``PING`` in one process
(so a noisy host slows them all alike): ``cap_actions`` off, on with no
entity holding an action, and on with every user warning and every project
and the global scope notifying (each charge then reads each scope's
counters and checks its thresholds). Prints each p50 and its multiple of the
PING p50. Each deployment runs under a key prefix of its own, deleted
afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import uuid
from decimal import Decimal
from typing import Any

from bench.common import DEFAULT_REDIS_URL, delete_prefix
from bench.measure import Op, interleaved_samples

#: the deployments timed: name -> (cap_actions, every scope with an action)
VARIANTS = {
    "off": (False, False),
    "on, no action set": (True, False),
    "on, every scope an action": (True, True),
}


async def _budget(url: str, cap_actions: bool, with_actions: bool) -> Any:
    from spendgate import BudgetConfig, BudgetManager

    budget = BudgetManager(
        BudgetConfig(
            redis_url=url,
            key_prefix=f"sgcaps{uuid.uuid4().hex[:8]}",
            daily_user_limit=Decimal(1000),
            daily_project_limit=Decimal(10**9),
            daily_global_limit=Decimal(10**9),
            cap_actions=cap_actions,
        )
    )
    await budget.open()
    if with_actions:
        for i in range(100):
            await budget.set_limits("user", f"u{i}", action="warn")
        for i in range(10):
            await budget.set_limits("project", f"p{i}", action="notify")
        await budget.set_limits("global", action="notify")
    return budget


async def measure(url: str, samples: int) -> None:
    """Time ``samples`` calls of each operation on each deployment."""
    budgets = {name: await _budget(url, *setting) for name, setting in VARIANTS.items()}
    client = budgets["off"].redis

    async def ping(i: int) -> object:
        return await client.execute_command("PING")  # type: ignore[no-untyped-call]

    def check(budget: Any) -> Op:
        async def op(i: int) -> object:
            return await budget.check_availability(f"u{i % 100}", f"p{i % 10}", 0.01)

        return op

    def record(budget: Any) -> Op:
        async def op(i: int) -> object:
            return await budget.record_spend(f"u{i % 100}", 0.002, f"p{i % 10}")

        return op

    ops: dict[str, Op] = {"PING": ping}
    for name, budget in budgets.items():
        ops[f"check_availability, {name}"] = check(budget)
        ops[f"record_spend, {name}"] = record(budget)
    try:
        await interleaved_samples(ops, 100)
        timings = await interleaved_samples(ops, samples, start=100)
    finally:
        for budget in budgets.values():
            await delete_prefix(budget.redis, budget.config.key_prefix)
            await budget.aclose()
    floor = statistics.median(timings["PING"]) / 1000
    print(f"bench.cap_actions: {samples} calls each, interleaved")
    print(f"{'operation':<45} {'p50 µs':>8} {'× PING':>8}")
    for name, values in timings.items():
        p50 = statistics.median(values) / 1000
        print(f"{name:<45} {p50:8.0f} {p50 / floor:7.2f}×")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cap_actions")
    parser.add_argument(
        "--redis-url",
        default=None,
        help=f"default: SPENDGATE_REDIS_URL, else {DEFAULT_REDIS_URL}",
    )
    parser.add_argument("--samples", type=int, default=3000)
    args = parser.parse_args(argv)
    url = args.redis_url or os.environ.get("SPENDGATE_REDIS_URL") or DEFAULT_REDIS_URL
    asyncio.run(measure(url, args.samples))


if __name__ == "__main__":
    main()
