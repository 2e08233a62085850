"""What the team-extend tests share (tests/test_teams_extend.py,
tests/test_teams_extend_refusals.py): the model the tests cap, a team
``eng`` with its member ``ada``, and raw reads of where the team's holds are
kept (``_kept``) and of what is left once none is pending (``_freed``)."""

from __future__ import annotations

from typing import Any

from spendgate import BudgetManager

GPT = "gpt-4o"


async def _team(budget: BudgetManager, balance: Any = 100, **caps: Any) -> None:
    await budget.create_team("eng", initial_balance=balance)
    await budget.add_team_member("eng", "ada", **caps)


async def _kept(budget: BudgetManager, project: str = "p1") -> dict[str, Any]:
    """Where the team's holds are kept, raw (micro-units; None: no key or
    field): the pool's balance and held amount, the member's held amount,
    the team's pending hold entries with their scores, and the held amounts
    of the user, the project and global."""
    redis, keys = budget.redis, budget.keys
    team, _, member_held, holds, _, _ = keys.team_keys("eng", "", "")
    balance, held = await redis.hmget(team, "b", "h")
    entries = await redis.zrange(holds, 0, -1, withscores=True)

    async def number(key: str) -> int | None:
        value = await redis.get(key)
        return None if value is None else int(value)

    return {
        "pool": int(balance),
        "pool_held": int(held or 0),
        "member_held": await redis.hget(member_held, "ada"),
        "entries": [(e.decode(), int(score)) for e, score in entries],
        "user": await number(keys.held("user", "ada")),
        "project": await number(keys.held("project", project)),
        "global": await number(keys.held("global", "")),
    }


def _freed(pool: int) -> dict[str, Any]:
    """What :func:`_kept` reads once no hold is pending: the pool's balance
    alone, no held amount anywhere (every key or field gone at zero)."""
    return {
        "pool": pool,
        "pool_held": 0,
        "member_held": None,
        "entries": [],
        "user": None,
        "project": None,
        "global": None,
    }
