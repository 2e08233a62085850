"""``extend`` of a team lease refused (``lua/team_extend.lua``): each
refusal changes no key at all.

How: on both backends, a team lease is extended past one binding limit at a
time: the member's cap, the pool (counting other members' holds), the
user's and the project's daily caps, the user's weekly and per-minute caps,
and with ``model_caps`` a model's cap at the lease's model. Each refusal
names its scope, window and limit, leaves the raw snapshot of the keys as it
was, and what fits is then admitted, up to the limit exactly. A removed
member's lease is not extended but still settles; settled, released,
expired and unknown leases are refused; a hold the team's purge let go (by
a manager whose clock runs ahead) is refused as expired, not held again.
"""

from __future__ import annotations

import pytest

from conftest import FakeClock, MakeBudget
from spendgate import (
    BudgetExceededError,
    BudgetManager,
    LeaseStateError,
    NotATeamMemberError,
)
from teams_extend_helpers import GPT, _freed, _kept, _team
from test_teams import _snapshot


@pytest.mark.parametrize(
    ("limit", "scope", "window"),
    [
        ("member", "team_member", "daily"),
        ("pool", "team", "balance"),
        ("user", "user", "daily"),
        ("project", "project", "daily"),
    ],
)
async def test_a_refused_extension_changes_nothing(
    budget: BudgetManager, limit: str, scope: str, window: str
) -> None:
    # each test one binding limit at 10, the others well above
    await _team(
        budget,
        balance=10 if limit == "pool" else 100,
        daily_cap=10 if limit == "member" else 50,
    )
    if limit in ("user", "project"):
        await budget.set_limits(limit, "ada" if limit == "user" else "p1", daily=10)
    lease = await budget.reserve("ada", 6, "p1", team_id="eng")
    before = await _snapshot(budget)
    with pytest.raises(BudgetExceededError) as refused:
        await budget.extend(lease, 5)
    error = refused.value
    assert (error.scope, error.window, error.limit) == (scope, window, 10)
    assert (error.held, error.requested) == (6, 5)
    assert await _snapshot(budget) == before
    assert lease.amount == 6  # the Lease given is left as it was
    # what fits is admitted: up to the limit exactly
    await budget.extend(lease, 4)
    assert (await budget.get_team("eng")).held == 10


async def test_the_pool_refusal_counts_other_members_holds(
    budget: BudgetManager,
) -> None:
    await _team(budget, balance=10)
    await budget.add_team_member("eng", "bob")
    lease = await budget.reserve("ada", 2, team_id="eng")
    await budget.reserve("bob", 7, team_id="eng")
    with pytest.raises(BudgetExceededError) as refused:
        await budget.extend(lease, 2)
    assert (refused.value.scope, refused.value.held) == ("team", 9)
    await budget.extend(lease, 1)
    team = await budget.get_team("eng")
    assert (team.held, team.available, team.members["ada"].held) == (10, 0, 3)


async def test_a_model_cap_refuses_an_extension_at_the_leases_model(
    make_budget: MakeBudget,
) -> None:
    capped = make_budget(model_caps=True)
    await _team(capped)
    await capped.set_limits("user", "ada", model=GPT, daily=5)
    lease = await capped.reserve("ada", 2, "p1", team_id="eng", model=GPT)
    await capped.extend(lease, 1)
    mr = capped.keys.model_held("user", "ada", GPT)
    assert await capped.redis.get(mr) == b"3000000"
    before = await _snapshot(capped)
    with pytest.raises(BudgetExceededError) as refused:
        await capped.extend(lease.id, 3)
    error = refused.value
    assert (error.model, error.scope, error.limit, error.held) == (GPT, "user", 5, 3)
    assert await _snapshot(capped) == before
    # another model's lease is not bound by it
    other = await capped.reserve("ada", 2, "p1", team_id="eng", model="gpt-4o-mini")
    await capped.extend(other, 10)
    await capped.extend(lease, 2)
    assert await capped.redis.get(mr) == b"5000000"
    project_mr = capped.keys.model_held("project", "p1", GPT)
    assert await capped.redis.get(project_mr) == b"5000000"
    # the settle frees the model's held amount of the whole hold
    await capped.settle(lease, 4)
    assert await capped.redis.get(mr) is None
    assert await capped.redis.get(project_mr) is None
    spent = (await capped.get_usage("ada", model=GPT))["user"].model
    assert spent is not None and spent.daily.spent == 4
    await capped.release(other)
    assert await _kept(capped) == _freed(96_000_000)


async def test_a_removed_members_lease_is_not_extended_but_still_settles(
    budget: BudgetManager,
) -> None:
    await _team(budget)
    lease = await budget.reserve("ada", 2, team_id="eng")
    await budget.remove_team_member("eng", "ada")
    before = await _snapshot(budget)
    with pytest.raises(NotATeamMemberError):
        await budget.extend(lease, 1)
    with pytest.raises(NotATeamMemberError):
        await budget.extend(lease.id, 0, ttl_seconds=3600)  # nor more time
    assert await _snapshot(budget) == before
    await budget.settle(lease, 2)
    kept = await _kept(budget)
    assert (kept["pool"], kept["pool_held"], kept["member_held"]) == (
        98_000_000,
        0,
        None,
    )


async def test_finished_and_unknown_team_leases_are_refused(
    budget: BudgetManager, clock: FakeClock
) -> None:
    await _team(budget)
    settled = await budget.reserve("ada", 1, team_id="eng")
    released = await budget.reserve("ada", 1, team_id="eng")
    expired = await budget.reserve("ada", 1, team_id="eng", ttl_seconds=1)
    await budget.settle(settled, 1)
    await budget.release(released)
    clock.advance(2)
    before = await _snapshot(budget)
    for lease, state in (
        (settled, "settled"),
        (released, "released"),
        (expired, "expired"),
        ("0" * 28 + ".eng", "unknown"),
    ):
        with pytest.raises(LeaseStateError, match=state):
            await budget.extend(lease, 1)
    assert await _snapshot(budget) == before


@pytest.mark.parametrize(
    ("setting", "window"),
    [("weekly_user_limit", "weekly"), ("per_minute_user_limit", "minute")],
)
async def test_the_users_weekly_and_per_minute_caps_bind_an_extension(
    make_budget: MakeBudget, setting: str, window: str
) -> None:
    budget = make_budget(**{setting: 5}, cap_actions=True)
    await _team(budget)
    lease = await budget.reserve("ada", 2, team_id="eng")
    await budget.extend(lease, 3)  # 5: up to the cap exactly
    before = await _snapshot(budget)
    with pytest.raises(BudgetExceededError) as refused:
        await budget.extend(lease, 1)
    assert (refused.value.scope, refused.value.window) == ("user", window)
    assert await _snapshot(budget) == before
    await budget.settle(lease, 4)
    assert (await budget.get_team("eng")).balance == 96


async def test_a_hold_the_teams_purge_let_go_is_not_grown_again(
    make_budget: MakeBudget,
) -> None:
    """A manager whose clock runs ahead (here: the system's, months after
    the test clock's) purges the team's holds it sees expired; a hold still
    pending by the extending manager's clock is then gone for the team, and
    its extension is refused as expired rather than held again."""
    budget = make_budget()
    await _team(budget)
    lease = await budget.reserve("ada", 2, team_id="eng")
    ahead = make_budget(use_clock=False)
    assert (await ahead.get_team("eng")).held == 0
    before = await _snapshot(budget)
    with pytest.raises(LeaseStateError, match="expired"):
        await budget.extend(lease, 1)
    assert await _snapshot(budget) == before
    await budget.settle(lease, 2)  # (a fact: still charged to the pool)
    kept = await _kept(budget)
    assert (kept["pool"], kept["pool_held"], kept["user"]) == (98_000_000, 0, None)
