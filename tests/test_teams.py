"""Teams: a shared pool, members with their own caps, ``team_id=`` charges.

How: on both backends (real Redis and fakeredis), a team is made and charged
through every call that takes ``team_id``; each test asserts the pool's
balance and held amount, the members' spending (``get_team``), the user's
own counters (``get_usage``) and the ledger entries the scripts wrote. A
refused call (not a member, no such team, a cap) is checked to change
nothing at all: the deployment's keys are read before and after.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from conftest import FakeClock, MakeBudget
from spendgate import (
    BudgetExceededError,
    BudgetManager,
    IdempotencyConflictError,
    InsufficientCreditsError,
    InvalidArgumentError,
    InvalidIdError,
    LeaseStateError,
    NotATeamMemberError,
    TeamExistsError,
    TeamNotFoundError,
)
from spendgate.core.protocol import FIELD


async def _snapshot(budget: BudgetManager) -> dict[bytes, Any]:
    """Every key of the deployment with its type and value (but ``due``,
    which any admission may write: the purge's own bookkeeping)."""
    redis = budget.redis
    seen: dict[bytes, Any] = {}
    async for key in redis.scan_iter(match=budget.keys.pattern(), count=1000):
        if key == budget.keys.due.encode():
            continue
        kind = await redis.type(key)
        if kind == b"string":
            seen[key] = await redis.get(key)
        elif kind == b"hash":
            seen[key] = await redis.hgetall(key)
        elif kind == b"zset":
            seen[key] = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == b"stream":
            seen[key] = await redis.xlen(key)
        else:
            seen[key] = kind
    return seen


async def _entries(budget: BudgetManager) -> list[dict[str, str]]:
    rows = await budget.redis.xrange(budget.keys.ledger)
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in rows]


async def _team(budget: BudgetManager, balance: Any = 100, **caps: Any) -> None:
    await budget.create_team("eng", name="Engineering", initial_balance=balance)
    await budget.add_team_member("eng", "ada", role="admin", **caps)


async def test_a_team_is_made_with_its_pool_and_members(budget: BudgetManager) -> None:
    made = await budget.create_team("eng", name="Engineering", initial_balance="50")
    assert (made.team_id, made.name, made.balance) == ("eng", "Engineering", 50)
    assert await budget.add_team_member("eng", "ada", role="admin", daily_cap=5)
    assert await budget.add_team_member("eng", "bob") is True
    # re-adding updates the role and caps
    assert (
        await budget.add_team_member("eng", "bob", "lead", monthly_cap="7.5") is False
    )
    team = await budget.get_team("eng")
    assert team.balance == 50 and team.held == 0 and team.available == 50
    ada, bob = team.members["ada"], team.members["bob"]
    assert (ada.role, ada.daily_cap, ada.monthly_cap) == ("admin", 5, None)
    assert (bob.role, bob.daily_cap, bob.monthly_cap) == ("lead", None, Decimal("7.5"))
    assert ada.spent_today == ada.spent_this_month == ada.held == 0
    grant = (await _entries(budget))[-1]
    assert grant[FIELD["kind"]] == "grant" and grant[FIELD["team_id"]] == "eng"
    assert grant[FIELD["amount"]] == "50000000"


async def test_creating_a_team_twice_is_an_error_and_changes_nothing(
    budget: BudgetManager,
) -> None:
    await budget.create_team("eng", initial_balance=5)
    before = await _snapshot(budget)
    with pytest.raises(TeamExistsError):
        await budget.create_team("eng", initial_balance=9)
    assert await _snapshot(budget) == before


async def test_unknown_teams_and_bad_ids_are_typed_errors(
    budget: BudgetManager,
) -> None:
    with pytest.raises(TeamNotFoundError):
        await budget.get_team("nope")
    with pytest.raises(TeamNotFoundError):
        await budget.add_team_member("nope", "ada")
    with pytest.raises(TeamNotFoundError):
        await budget.credit_team("nope", 1)
    with pytest.raises(TeamNotFoundError):
        await budget.record_spend("ada", 1, team_id="nope")
    with pytest.raises(InvalidIdError):
        await budget.create_team("")
    with pytest.raises(InvalidIdError):
        await budget.create_team("x" * 10_000)
    with pytest.raises(TypeError):
        await budget.create_team(7)  # type: ignore[arg-type]
    await budget.create_team("eng")
    before = await _snapshot(budget)
    with pytest.raises(ValueError):
        await budget.add_team_member("eng", "ada", role="a|b")
    # a display name is held to a plan name's rule: bounded, encodable
    for name in ("n" * 257, "\ud800", " "):
        with pytest.raises(InvalidIdError):
            await budget.create_team("ops", name=name)
    with pytest.raises(InvalidArgumentError):
        await budget.create_team("ops", name=b"x" * 10_000)  # type: ignore[arg-type]
    assert await _snapshot(budget) == before  # nothing written by any of them
    assert (await budget.create_team("ops", name="")).name is None


async def test_ids_holding_separators_keep_their_holds_apart(
    budget: BudgetManager, clock: FakeClock
) -> None:
    team, user = "t|1|x", "u|9|y"
    await budget.create_team(team, initial_balance=10)
    await budget.add_team_member(team, user)
    await budget.add_team_member(team, "u")
    lease = await budget.reserve(user, 3, team_id=team, idempotency_key="k")
    same = await budget.reserve(user, 3, team_id=team, idempotency_key="k")
    assert same.id == lease.id and same.expires_ms == lease.expires_ms
    upto = await budget.reserve_up_to("u", 5, team_id=team, ttl_seconds=10)
    assert upto.amount == 5 and upto.id.endswith("." + team)
    assert (await budget.get_team(team)).members[user].held == 3
    clock.advance(11)  # the second hold expires: purged by the team
    team_now = await budget.get_team(team)
    assert (team_now.held, team_now.members["u"].held) == (3, 0)
    assert await budget.release(lease.id) is True
    assert (await budget.get_team(team)).held == 0


async def test_ids_that_look_alike_never_share_keys(budget: BudgetManager) -> None:
    await budget.create_team("a:b", initial_balance=10)
    await budget.create_team("a", initial_balance=20)
    await budget.add_team_member("a", "b:x")
    await budget.add_team_member("a:b", "x")
    await budget.record_spend("b:x", 3, team_id="a")
    assert (await budget.get_team("a:b")).balance == 10
    assert (await budget.get_team("a")).balance == 17
    assert (await budget.get_team("a:b")).members["x"].spent_today == 0


async def test_a_team_record_draws_on_the_pool_not_the_user(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(enforce_balance=True)
    await _team(budget)
    await budget.add_credits("ada", 10)
    rec = await budget.record_spend("ada", "2.5", project_id="p", team_id="eng")
    assert rec.team_id == "eng" and not rec.spooled
    team = await budget.get_team("eng")
    assert team.balance == Decimal("97.5")
    assert team.members["ada"].spent_today == Decimal("2.5")
    assert team.members["ada"].spent_this_month == Decimal("2.5")
    usage = await budget.get_usage("ada", "p")
    assert usage["user"].daily.spent == Decimal("2.5")
    assert usage["project"].daily.spent == Decimal("2.5")
    assert usage["user"].balance == 10  # the user's own balance is untouched
    entry = (await _entries(budget))[-1]
    assert entry[FIELD["team_id"]] == "eng" and entry[FIELD["user_id"]] == "ada"
    assert entry[FIELD["kind"]] == "spend" and entry[FIELD["amount"]] == "2500000"


async def test_a_non_member_is_refused_and_nothing_changes(
    budget: BudgetManager,
) -> None:
    await _team(budget)
    lease = await budget.reserve("ada", 1, team_id="eng")
    before = await _snapshot(budget)
    with pytest.raises(NotATeamMemberError) as caught:
        await budget.record_spend("eve", 1, team_id="eng")
    assert (caught.value.team_id, caught.value.user_id) == ("eng", "eve")
    with pytest.raises(NotATeamMemberError):
        await budget.reserve("eve", 1, team_id="eng")
    with pytest.raises(NotATeamMemberError):
        await budget.reserve_up_to("eve", 1, team_id="eng")
    with pytest.raises(NotATeamMemberError):
        await budget.deduct("eve", 1, team_id="eng", idempotency_key="k")
    with pytest.raises(NotATeamMemberError):
        await budget.remove_team_member("eng", "eve")
    assert await _snapshot(budget) == before
    assert (await budget.get_team("eng")).held == 1
    await budget.release(lease)


async def test_removing_a_member_stops_their_charges(budget: BudgetManager) -> None:
    await _team(budget)
    lease = await budget.reserve("ada", 2, team_id="eng")
    await budget.remove_team_member("eng", "ada")
    assert "ada" not in (await budget.get_team("eng")).members
    with pytest.raises(NotATeamMemberError):
        await budget.record_spend("ada", 1, team_id="eng")
    with pytest.raises(NotATeamMemberError):
        await budget.reserve("ada", 1, team_id="eng")
    # a hold taken before is still settled on the pool (the money was spent)
    settled = await budget.settle(lease, 3)
    assert settled.team_id == "eng"
    team = await budget.get_team("eng")
    assert (team.balance, team.held) == (97, 0)


async def test_a_team_lease_settles_on_the_pool(budget: BudgetManager) -> None:
    await _team(budget, daily_cap=10)
    lease = await budget.reserve("ada", 4, project_id="p", team_id="eng")
    assert lease.team_id == "eng" and lease.id.endswith(".eng")
    team = await budget.get_team("eng")
    assert (team.held, team.members["ada"].held) == (4, 4)
    assert (await budget.get_usage("ada", "p"))["user"].held == 4
    # settled by its id alone: the id names its team
    record = await budget.settle(lease.id, "3.5", model="m")
    assert (record.kind, record.user_id, record.project_id) == ("settle", "ada", "p")
    again = await budget.settle(lease.id, "3.5")
    assert again.replayed and again.entry_id == record.entry_id
    with pytest.raises(IdempotencyConflictError):
        await budget.settle(lease.id, 9)
    team = await budget.get_team("eng")
    assert (team.balance, team.held) == (Decimal("96.5"), 0)
    assert team.members["ada"].spent_today == Decimal("3.5")
    assert team.members["ada"].held == 0
    usage = await budget.get_usage("ada", "p")
    assert (usage["user"].held, usage["user"].daily.spent) == (0, Decimal("3.5"))
    entry = (await _entries(budget))[-1]
    assert entry[FIELD["kind"]] == "settle" and entry[FIELD["team_id"]] == "eng"


async def test_a_team_lease_is_released_and_its_context_settles(
    budget: BudgetManager,
) -> None:
    await _team(budget)
    lease = await budget.reserve("ada", 4, team_id="eng")
    assert await budget.release(lease.id) is True
    assert await budget.release(lease) is False
    assert (await budget.get_team("eng")).held == 0
    with pytest.raises(LeaseStateError):
        await budget.settle(lease, 1)
    async with budget.lease("ada", 2, team_id="eng") as held:
        assert held.team_id == "eng"
        held.actual_cost = Decimal("1.5")
    team = await budget.get_team("eng")
    assert (team.balance, team.held) == (Decimal("98.5"), 0)
    with pytest.raises(LeaseStateError):
        await budget.release("0" * 28 + ".other")


async def test_an_expired_team_hold_stops_counting(
    budget: BudgetManager, clock: FakeClock
) -> None:
    await _team(budget, balance=10)
    await budget.reserve("ada", 8, team_id="eng", ttl_seconds=30)
    with pytest.raises(BudgetExceededError) as caught:
        await budget.reserve("ada", 5, team_id="eng")
    assert (caught.value.scope, caught.value.window) == ("team", "balance")
    clock.advance(31)
    await budget.reserve("ada", 5, team_id="eng")
    team = await budget.get_team("eng")
    assert (team.held, team.members["ada"].held) == (5, 5)


async def test_member_caps_refuse_with_the_member_named(
    budget: BudgetManager,
) -> None:
    await _team(budget, daily_cap=3, monthly_cap=5)
    await budget.record_spend("ada", 2, team_id="eng")
    before = await _snapshot(budget)
    with pytest.raises(BudgetExceededError) as caught:
        await budget.reserve("ada", 2, team_id="eng")
    refusal = caught.value
    assert (refusal.scope, refusal.scope_id, refusal.window) == (
        "team_member",
        "ada",
        "daily",
    )
    assert (refusal.limit, refusal.spent, refusal.requested) == (3, 2, 2)
    assert refusal.resets_at is not None
    assert str(refusal).startswith("Team member daily limit exceeded for 'ada'")
    assert await _snapshot(budget) == before
    lease = await budget.reserve_up_to("ada", 10, team_id="eng")
    assert lease.amount == 1


async def test_the_users_own_caps_hold_on_a_team_charge(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(daily_user_limit=4, daily_project_limit=5)
    await _team(budget)
    await budget.record_spend("ada", 3)  # on the user's own
    with pytest.raises(BudgetExceededError) as caught:
        await budget.reserve("ada", 2, team_id="eng")
    assert (caught.value.scope, caught.value.window) == ("user", "daily")
    await budget.add_team_member("eng", "bob")
    await budget.add_team_member("eng", "cy")
    await budget.record_spend("bob", 3, project_id="p", team_id="eng")
    with pytest.raises(BudgetExceededError) as caught:
        await budget.deduct("cy", 3, project_id="p", team_id="eng")
    assert caught.value.scope == "project"


async def test_a_team_deduct_charges_the_pool_and_stops_at_zero(
    budget: BudgetManager,
) -> None:
    await _team(budget, balance=5)
    res = await budget.deduct("ada", 3, team_id="eng", idempotency_key="d1")
    assert (res.amount, res.balance_after, res.team_id) == (3, 2, "eng")
    again = await budget.deduct("ada", 3, team_id="eng", idempotency_key="d1")
    assert again.replayed and again.entry_id == res.entry_id
    with pytest.raises(IdempotencyConflictError):
        await budget.deduct("ada", 4, team_id="eng", idempotency_key="d1")
    before = await _snapshot(budget)
    with pytest.raises(InsufficientCreditsError) as caught:
        await budget.deduct("ada", 3, team_id="eng")
    assert (caught.value.scope, caught.value.scope_id) == ("team", "eng")
    assert await _snapshot(budget) == before
    assert (await budget.get_team("eng")).balance == 2
    entry = (await _entries(budget))[-1]
    assert entry[FIELD["team_id"]] == "eng" and entry[FIELD["amount"]] == "3000000"


async def test_credits_top_the_pool_up_idempotently(budget: BudgetManager) -> None:
    await _team(budget, balance=0)
    with pytest.raises(BudgetExceededError):
        await budget.reserve("ada", 1, team_id="eng")
    first = await budget.credit_team("eng", "12.5", idempotency_key="c1")
    assert (first.balance, first.team_id, first.kind) == (
        Decimal("12.5"),
        "eng",
        "grant",
    )
    again = await budget.credit_team("eng", "12.5", idempotency_key="c1")
    assert again.replayed and again.entry_id == first.entry_id
    with pytest.raises(IdempotencyConflictError):
        await budget.credit_team("eng", 1, idempotency_key="c1")
    assert (await budget.get_team("eng")).balance == Decimal("12.5")
    await budget.reserve("ada", 12, team_id="eng")


async def test_idempotent_replays_of_team_calls_charge_once(
    budget: BudgetManager,
) -> None:
    await _team(budget)
    first = await budget.record_spend("ada", 2, team_id="eng", idempotency_key="r")
    again = await budget.record_spend("ada", 2, team_id="eng", idempotency_key="r")
    assert again.replayed and again.entry_id == first.entry_id
    with pytest.raises(IdempotencyConflictError):
        await budget.record_spend("ada", 2, idempotency_key="r")  # not the team's
    lease = await budget.reserve("ada", 1, team_id="eng", idempotency_key="h")
    same = await budget.reserve("ada", 1, team_id="eng", idempotency_key="h")
    assert same.replayed and same.id == lease.id
    team = await budget.get_team("eng")
    assert (team.balance, team.held, team.members["ada"].spent_today) == (98, 1, 2)
    assert len([e for e in await _entries(budget) if e[FIELD["kind"]] == "spend"]) == 1


async def test_a_team_charge_writes_the_users_threshold_events_once(
    make_budget: MakeBudget,
) -> None:
    """With cap actions, a team charge counts in the user's own warn caps as
    any charge does: the thresholds it crosses are written by its script,
    once, and its result carries them (a replay answers them again)."""
    budget = make_budget(cap_actions=True)
    await _team(budget)
    await budget.set_limits("user", "ada", daily=10, action="warn", thresholds=(0.5,))
    first = await budget.record_spend("ada", 6, team_id="eng", idempotency_key="w")
    warned = [(w.scope, w.threshold) for w in first.warnings]
    assert warned == [("user", Decimal("0.5"))]
    again = await budget.record_spend("ada", 6, team_id="eng", idempotency_key="w")
    assert again.replayed and again.warnings == first.warnings
    lease = await budget.reserve("ada", 3, team_id="eng")  # warn: admitted past 10
    settled = await budget.settle(lease, 5)
    assert [(w.scope, w.reached_cap) for w in settled.warnings] == [("user", True)]
    res = await budget.deduct("ada", 1, team_id="eng")
    assert res.warnings == () and res.balance_after == 88
    raw = await budget.redis.xrange(budget.keys.events)
    assert len(raw) == 2  # the 0.5 warning, the cap reached


async def test_a_team_fixed_job_charges_the_pool_as_a_team_deduct(
    budget: BudgetManager,
) -> None:
    """``deduct_fixed(team_id=)`` is ``deduct(team_id=)`` with the book's
    fixed price: the pool pays it, the member's caps refuse it (nothing
    changes), a non-member is refused, a replay answers the first charge and
    the same key for another team (or none) is a conflict."""
    book = {"version": 1, "models": {"_default": "0"}, "fixed": {"batch_job": 3}}
    await budget.publish_pricing(book)
    await _team(budget, balance=10, daily_cap=5)
    await budget.create_team("ops", initial_balance=10)
    await budget.add_team_member("ops", "ada")
    await budget.add_credits("ada", 50)
    res = await budget.deduct_fixed("ada", "batch_job", "p", "j1", team_id="eng")
    assert (res.amount, res.balance_after, res.team_id) == (3, 7, "eng")
    assert res.breakdown is not None and res.breakdown.fixed == 3
    again = await budget.deduct_fixed("ada", "batch_job", "p", "j1", team_id="eng")
    assert again.replayed and again.entry_id == res.entry_id
    assert (again.amount, again.balance_after, again.team_id) == (3, 7, "eng")
    for other in ("ops", None):
        with pytest.raises(IdempotencyConflictError):
            await budget.deduct_fixed("ada", "batch_job", "p", "j1", team_id=other)
    before = await _snapshot(budget)
    with pytest.raises(BudgetExceededError) as caught:  # 3 + 3 > the cap of 5
        await budget.deduct_fixed("ada", "batch_job", team_id="eng")
    assert (caught.value.scope, caught.value.window) == ("team_member", "daily")
    with pytest.raises(NotATeamMemberError):
        await budget.deduct_fixed("bob", "batch_job", team_id="eng")
    assert await _snapshot(budget) == before
    team = await budget.get_team("eng")
    assert (team.balance, team.members["ada"].spent_today) == (7, 3)
    assert (await budget.get_balance("ada")).total == 50
    entry = (await _entries(budget))[-1]
    assert entry[FIELD["team_id"]] == "eng" and entry[FIELD["amount"]] == "3000000"
    assert (entry[FIELD["user_id"]], entry[FIELD["project_id"]]) == ("ada", "p")
