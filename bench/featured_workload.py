"""The bench's calls with teams and per-model caps on (issue 20's target:
with a team and a per-model cap, ``check_availability`` and ``record_spend``
within 1.6x PING).

A deployment of its own (``model_caps`` changes every admitting script it
runs), on :mod:`bench.runner`'s users: a cap on :data:`MODEL` in every scope
a call touches (the user's, the project's and the global one: the most a
model's admission reads), never reached, and each user a member of one of
:mod:`bench.team_workload`'s funded teams. Timed:

- ``check_availability (model cap)``: a check for the capped model, which
  reads its per-model counters and holds beside the scope's own;
- ``team record_spend (model cap)``: a fact on the user's team pool for the
  capped model, which checks the membership and counts the member's team
  counters, the pool and every scope's model counters in the same script.

Kept apart from :mod:`bench.runner`'s core workload, as the others are: an
older spendgate (``bench.versus``) has neither, and this module is only used
when the version measured has both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bench import team_workload
from bench.common import CHECK_COST, RECORD_COST

#: the capped model
MODEL = "gpt-4o"
#: its caps, in every scope: never reached by a run
CAP = 10**8


def supported(budget: Any) -> bool:
    """Whether this version of spendgate has teams and per-model caps."""
    return team_workload.supported(budget) and hasattr(budget, "get_team")


def config_changes() -> dict[str, Any]:
    """What the deployment's configuration adds to the bench's."""
    return {"model_caps": True}


async def prepare(budget: Any, users: list[str], projects: list[str | None]) -> None:
    """Cap the model in every scope, make the teams and put the users on them."""
    await budget.set_limits("global", model=MODEL, daily=CAP, monthly=CAP)
    for project in projects:
        if project is not None:
            await budget.set_limits("project", project, model=MODEL, daily=CAP)
    for user in users:
        await budget.set_limits("user", user, model=MODEL, daily=CAP)
    await team_workload.prepare(budget, users)


def featured_ops(
    budget: Any, users: list[str], projects: list[str | None]
) -> dict[str, Callable[[int], Awaitable[object]]]:
    """Call ``i`` is for user ``i`` and project ``i``, round robin."""
    nu, np_, teams = len(users), len(projects), team_workload.TEAMS

    async def check(i: int) -> object:
        return await budget.check_availability(
            users[i % nu], projects[i % np_], CHECK_COST, model=MODEL
        )

    async def team_record(i: int) -> object:
        u = i % nu
        return await budget.record_spend(
            users[u],
            RECORD_COST,
            projects[i % np_],
            MODEL,
            team_id=teams[u % len(teams)],
        )

    return {
        "check_availability (model cap)": check,
        "team record_spend (model cap)": team_record,
    }
