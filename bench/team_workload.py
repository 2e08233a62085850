"""The bench's team charges: ``record_spend`` and ``deduct`` with
``team_id=``, on the teams' own scripts (``lua/team_*.lua``).

Ten teams, each user a member of one (``i % 10``) with daily and monthly
caps far above what a run spends, every pool funded: each timed call checks
the membership, the user's caps, the member's caps and the pool, then
charges, in one round trip. Kept apart from :mod:`bench.runner`'s core
workload, as :mod:`bench.deduct_workload` is: an older spendgate
(``bench.versus``) has no teams, and this module is only used when the
version measured has them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bench import deduct_workload
from bench.common import RECORD_COST

#: the teams the users are spread over
TEAMS = [f"bench-team-{i}" for i in range(10)]
#: each pool's balance, and each member's caps on it: never binding
POOL, MEMBER_DAILY, MEMBER_MONTHLY = "1000000000", "1000000", "10000000"


def supported(budget: Any) -> bool:
    """Whether this version of spendgate has teams."""
    return hasattr(budget, "create_team")


async def prepare(budget: Any, users: list[str]) -> None:
    """Make the teams, fund their pools, spread the users over them."""
    for team in TEAMS:
        await budget.create_team(team, initial_balance=POOL)
    for i, user in enumerate(users):
        team = TEAMS[i % len(TEAMS)]
        await budget.add_team_member(
            team, user, daily_cap=MEMBER_DAILY, monthly_cap=MEMBER_MONTHLY
        )


def team_ops(
    budget: Any, users: list[str], projects: list[str | None]
) -> dict[str, Callable[[int], Awaitable[object]]]:
    """Call ``i`` charges user ``i`` (and project ``i``) on its team's pool:
    ``team_record_spend`` a fact, ``team_deduct`` the bench's priced usage
    (:mod:`bench.deduct_workload`: its book must be active)."""
    nu, np_, nt = len(users), len(projects), len(TEAMS)
    metrics = deduct_workload.usage()

    async def record(i: int) -> object:
        u = i % nu
        return await budget.record_spend(
            users[u], RECORD_COST, projects[i % np_], team_id=TEAMS[u % nt]
        )

    async def deduct(i: int) -> object:
        u = i % nu
        return await budget.deduct(
            users[u], metrics, projects[i % np_], team_id=TEAMS[u % nt]
        )

    return {"team_record_spend": record, "team_deduct": deduct}
