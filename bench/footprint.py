"""What a deployment costs beyond latency: overshoot under concurrency (vs
the peer), Redis memory per active user-day, and import times."""

from __future__ import annotations

import asyncio
import sys
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from bench.common import CHECK_COST, RECORD_COST, delete_prefix
from bench.grant_memory import grant_memory

if TYPE_CHECKING:
    from bench.runner import Options


async def overshoot(
    options: Options, prefix: str, run_id: str, peer: Any
) -> dict[str, Any]:
    """``tasks`` concurrent check-then-charge of 1 against a daily limit of ``limit``.

    spendgate is run twice: with ``check_availability`` + ``record_spend``
    (a check is a read, so concurrent callers can all pass it: the same race
    as the peer's) and with leases (``reserve`` + ``settle``), where the hold
    is taken in the same atomic step as the check.
    """
    from spendgate import BudgetConfig, BudgetExceededError, BudgetManager

    tasks, limit = options.overshoot_tasks, options.overshoot_limit
    config = BudgetConfig(
        redis_url=options.redis_url,
        key_prefix=prefix,
        daily_user_limit=limit,
        daily_project_limit=None,
        daily_global_limit=None,
    )
    out: dict[str, Any] = {"tasks": tasks, "limit": limit, "cost": 1}
    async with BudgetManager(config) as budget:

        async def check_then_record(user: str) -> bool:
            try:
                await budget.check_availability(user, None, 1)
            except BudgetExceededError:
                return False
            await budget.record_spend(user, 1)
            return True

        async def lease(user: str) -> bool:
            try:
                held = await budget.reserve(user, 1)
            except BudgetExceededError:
                return False
            await budget.settle(held, 1)
            return True

        for name, fn in (
            ("spendgate_check_record", check_then_record),
            ("spendgate_lease", lease),
        ):
            user = f"overshoot-{name}-{run_id}"
            admitted = sum(await asyncio.gather(*(fn(user) for _ in range(tasks))))
            usage = await budget.get_usage(user)
            recorded = usage["user"].daily.spent
            out[name] = overshoot_row(admitted, recorded, limit)
    if peer is not None:
        reply = await peer.call(
            "overshoot",
            user=f"overshoot-peer-{run_id}",
            tasks=tasks,
            limit=limit,
            cost=1,
        )
        out["peer_check_record"] = overshoot_row(
            int(reply["admitted"]), Decimal(repr(float(reply["recorded"]))), limit
        )
    return out


def overshoot_row(admitted: int, recorded: Decimal, limit: int) -> dict[str, Any]:
    return {
        "admitted": admitted,
        "recorded": str(recorded),
        "overshoot": str(max(Decimal(0), recorded - limit)),
    }


async def memory_per_user_day(options: Options, prefix: str) -> dict[str, Any]:
    """``MEMORY USAGE`` of what active users leave in Redis over one day,
    and of grants and refund records (:mod:`bench.grant_memory`).

    Each simulated user (a 36-character UUID id, in a project) makes 20
    checks, 10 direct charges and 5 leases in the day. The user's own keys
    (its day and month counters; a held amount or balance if one is left)
    are the per-user-day cost; the per-fact idempotency records, the
    finished lease records and the ledger stream entries are reported on
    separate lines, per fact / lease / entry.
    """
    from spendgate import BudgetConfig, BudgetManager

    mem_prefix = prefix + "mem"
    config = BudgetConfig(
        redis_url=options.redis_url,
        key_prefix=mem_prefix,
        daily_user_limit=100,
        daily_project_limit=10_000,
        daily_global_limit=1_000_000,
    )
    users = [str(uuid.uuid4()) for _ in range(options.memory_users)]
    spends = leases = 0
    async with BudgetManager(config) as budget:
        client = budget.redis
        for n, user in enumerate(users):
            project = f"project-{n % 5}"
            for _ in range(20):
                await budget.check_availability(user, project, CHECK_COST)
            for _ in range(10):
                await budget.record_spend(
                    user, RECORD_COST, project, model="gpt-4o-mini"
                )
                spends += 1
            for _ in range(5):
                async with budget.lease(user, CHECK_COST, project) as held:
                    held.actual_cost = RECORD_COST
                leases += 1
        sizes: dict[str, int] = {}
        async for key in client.scan_iter(match=budget.keys.pattern(), count=1000):
            name = key.decode()
            sizes[name] = int(await client.memory_usage(name, samples=0) or 0)
        base = budget.keys.base
        per_user = []
        for user in users:
            per_user.append(sum(v for k, v in sizes.items() if k.endswith(":" + user)))
        idem = [v for k, v in sizes.items() if k.startswith(base + "i:")]
        charges = [v for k, v in sizes.items() if k.startswith(base + "c:")]
        holds = [v for k, v in sizes.items() if k.startswith(base + "h:")]
        ledger_bytes = sizes.get(budget.keys.ledger, 0)
        ledger_len = int(await client.xlen(budget.keys.ledger))
        user_keys = sorted(
            k[len(base) :].replace(users[0], "<user>")
            for k in sizes
            if k.endswith(":" + users[0])
        )
        shared = sum(
            v
            for k, v in sizes.items()
            if not any(k.endswith(":" + u) for u in users)
            and not k.startswith((base + "i:", base + "h:", base + "c:"))
            and k != budget.keys.ledger
        )
        grants = await grant_memory(budget, RECORD_COST)
        await delete_prefix(client, mem_prefix)
    return {
        "users": len(users),
        "user_id_length": len(users[0]),
        "day": "20 checks, 10 record_spend, 5 lease reserve+settle, one project",
        "per_user_day_bytes": sum(per_user) / len(per_user),
        "per_user_keys": user_keys,
        "per_fact_idempotency_bytes": sum(idem) / len(idem) if idem else 0,
        "idempotency_records": len(idem),
        "per_lease_record_bytes": sum(holds) / len(holds) if holds else 0,
        # (a charge's refund record, kept refund_window_seconds; these users
        # hold no balance, so it names no grant)
        "per_refund_record_bytes": sum(charges) / len(charges) if charges else 0,
        "refund_records": len(charges),
        **grants,
        "lease_records": len(holds),
        "per_ledger_entry_bytes": ledger_bytes / ledger_len if ledger_len else 0,
        "ledger_entries": ledger_len,
        "shared_keys_bytes": shared,
        # idempotency records are kept per record_spend (and add_credits); a
        # settle is made idempotent by its lease record instead
        "spends": spends,
        "leases": leases,
    }


def import_times(options: Options) -> dict[str, Any]:
    from bench.peer import (
        DEFAULT_VENV,
        PEER_VERSION,
        import_seconds,
        installed_version,
        peer_import_seconds,
        venv_python,
    )

    out = {
        "spendgate": import_seconds(sys.executable, "spendgate", options.import_repeat)
    }
    python = venv_python(DEFAULT_VENV)
    if options.peer and installed_version(python) == PEER_VERSION:
        out["peer"] = peer_import_seconds(python, options.import_repeat)
    return out
