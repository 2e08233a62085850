"""What the plan and feature tests share: bursar's README book with plans,
and a snapshot of every key of a deployment (to prove nothing changed)."""

from __future__ import annotations

from typing import Any

from spendgate import BudgetManager

#: bursar 0.0.1's README, "With plans", as written
BURSAR_BOOK_WITH_PLANS: dict[str, Any] = {
    "version": 1,
    "models": {"_default": "input_tokens * 0.01 + output_tokens * 0.03"},
    "plans": {
        "free": {
            "id": "free",
            "name": "Free Tier",
            "free_allowance": 50000,
            "rate_overrides": {
                "_default": "input_tokens * 0.02 + output_tokens * 0.06"
            },
            "features": {"max_concurrency": 1, "background_removal": True},
            "feature_limits": {
                "background_removal": {
                    "max_calls": 5,
                    "period": "monthly",
                    "action": "deny",
                }
            },
        },
        "pro": {"id": "pro", "name": "Pro Plan", "free_allowance": 500000},
    },
}


async def snapshot(budget: BudgetManager) -> dict[bytes, Any]:
    """Every key of the deployment with its value (hashes and streams in
    full): equal snapshots mean nothing changed."""
    client = budget.redis
    keys = sorted(
        [k async for k in client.scan_iter(match=budget.keys.pattern(), count=1000)]
    )
    values: dict[bytes, Any] = {}
    for key in keys:
        kind = await client.type(key)
        if kind == b"string":
            values[key] = await client.get(key)
        elif kind == b"hash":
            values[key] = await client.hgetall(key)
        elif kind == b"stream":
            values[key] = await client.xrange(key)
        else:
            values[key] = kind
    return values
