"""Per-model caps on a team's pool: ``reserve`` / ``reserve_up_to`` /
``deduct`` with ``team_id=`` and ``model=``.

How: a deployment with ``model_caps`` on, both backends. A model's cap (of
the user, the project or global) refuses a team hold or deduct for that
model alone, with ``BudgetExceededError.model`` set and nothing changed (the
deployment's keys are read before and after); 200 concurrent team reserves
of a capped model admit exactly up to the tightest of the model's cap, the
member's cap and the pool; the model's held amount (``mr:``, read through
``get_usage(..., model=)`` and the key itself) is exact after settle,
release and expiry. With ``model_caps`` off the team scripts carry nothing
of it and a team lease still remembers its model for the ledger.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from conftest import FakeClock, MakeBudget
from spendgate import (
    BudgetExceededError,
    BudgetManager,
    IdempotencyConflictError,
    Lease,
)
from spendgate.core.protocol import FIELD
from spendgate.core.scripts import SCRIPT_CONSTANTS, configured_source
from test_teams import _entries, _snapshot

GPT = "gpt-4o"
MINI = "gpt-4o-mini"


@pytest.fixture
def capped(make_budget: MakeBudget) -> BudgetManager:
    return make_budget(model_caps=True)


async def _team(budget: BudgetManager, balance: Any = 100, **caps: Any) -> None:
    await budget.create_team("eng", initial_balance=balance)
    await budget.add_team_member("eng", "ada", **caps)


async def _model_held(budget: BudgetManager, project: str | None = None) -> Decimal:
    """The model's held amount of the user (and of global: always the same
    here, one user holding)."""
    usage = await budget.get_usage("ada", project, model=GPT)
    user, world = usage["user"].model, usage["global"].model
    assert user is not None and world is not None
    assert user.held == world.held
    return user.held


async def _held_keys(budget: BudgetManager) -> list[str]:
    base = budget.keys.base
    return [
        key.decode()[len(base) :]
        async for key in budget.redis.scan_iter(match=budget.keys.pattern())
        if key.decode()[len(base) :].startswith("mr:")
    ]


@pytest.mark.parametrize("scope", ["user", "project", "global"])
async def test_a_model_cap_refuses_team_holds_of_that_model_only(
    capped: BudgetManager, scope: str
) -> None:
    await _team(capped)
    scope_id = {"user": "ada", "project": "p1", "global": None}[scope]
    await capped.set_limits(scope, scope_id, model=GPT, daily=3)
    await capped.reserve("ada", 2, "p1", team_id="eng", model=GPT)
    before = await _snapshot(capped)
    with pytest.raises(BudgetExceededError) as refused:
        await capped.reserve("ada", 2, "p1", team_id="eng", model=GPT)
    error = refused.value
    assert (error.model, error.scope, error.window) == (GPT, scope, "daily")
    assert (error.limit, error.held, error.requested) == (3, 2, 2)
    with pytest.raises(BudgetExceededError):
        await capped.reserve_up_to("ada", 5, 2, "p1", team_id="eng", model=GPT)
    assert await _snapshot(capped) == before  # refused: nothing changed
    # what fits: reserve_up_to holds the model's room; other models pass
    fitted = await capped.reserve_up_to("ada", 5, 0, "p1", team_id="eng", model=GPT)
    assert fitted.amount == 1 and fitted.model == GPT
    await capped.reserve("ada", 10, "p1", team_id="eng", model=MINI)
    await capped.reserve("ada", 10, "p1", team_id="eng")
    team = await capped.get_team("eng")
    assert (team.held, team.members["ada"].held) == (23, 23)
    assert await _model_held(capped, "p1") == 3


async def test_a_model_cap_refuses_a_team_deduct_of_that_model_only(
    capped: BudgetManager,
) -> None:
    await _team(capped)
    await capped.set_limits("user", "ada", model=GPT, daily=2)
    first = await capped.deduct("ada", "1.5", team_id="eng", model=GPT)
    assert first.balance_after == Decimal("98.5")
    before = await _snapshot(capped)
    with pytest.raises(BudgetExceededError) as refused:
        await capped.deduct("ada", 1, team_id="eng", model=GPT)
    assert (refused.value.model, refused.value.spent) == (GPT, Decimal("1.5"))
    assert await _snapshot(capped) == before
    # the model's room narrows nothing else: other models, no model
    await capped.deduct("ada", 1, team_id="eng", model=MINI)
    await capped.deduct("ada", 1, team_id="eng")
    assert (await capped.get_team("eng")).balance == Decimal("96.5")
    entry = (await _entries(capped))[-2]
    assert (entry[FIELD["model"]], entry[FIELD["team_id"]]) == (MINI, "eng")
    # a team fact is never refused, and counts at its model
    await capped.record_spend("ada", 5, team_id="eng", model=GPT)
    usage = (await capped.get_usage("ada", model=GPT))["user"].model
    assert usage is not None and usage.daily.spent == Decimal("6.5")


async def test_200_concurrent_team_reserves_stop_at_the_model_cap(
    capped: BudgetManager,
) -> None:
    """The model's cap binds (10) below the member's (15) and the pool (20);
    then the other two still hold for another model."""
    await _team(capped, balance=20, daily_cap=15)
    await capped.set_limits("project", "p1", model=GPT, daily=10)

    async def hold(model: str) -> Lease | BudgetExceededError:
        try:
            return await capped.reserve("ada", "0.5", "p1", team_id="eng", model=model)
        except BudgetExceededError as exc:
            return exc

    results = await asyncio.gather(*(hold(GPT) for _ in range(200)))
    granted = [r for r in results if isinstance(r, Lease)]
    refusals = {(r.scope, r.model) for r in results if not isinstance(r, Lease)}
    assert len(granted) == 20 and refusals == {("project", GPT)}
    assert await _model_held(capped, "p1") == 10
    # another model meets the member's cap next (5 more), never the pool
    results = await asyncio.gather(*(hold(MINI) for _ in range(200)))
    more = [r for r in results if isinstance(r, Lease)]
    refusals = {(r.scope, r.model) for r in results if not isinstance(r, Lease)}
    assert len(more) == 10 and refusals == {("team_member", None)}
    team = await capped.get_team("eng")
    assert (team.held, team.balance, team.members["ada"].held) == (15, 20, 15)
    await asyncio.gather(*(capped.settle(lease, "0.5") for lease in granted + more))
    team = await capped.get_team("eng")
    assert (team.held, team.balance, team.members["ada"].spent_today) == (0, 5, 15)
    assert await _model_held(capped, "p1") == 0


async def test_settle_release_and_expiry_keep_the_model_held_exact(
    capped: BudgetManager, clock: FakeClock
) -> None:
    await _team(capped)
    await capped.set_limits("user", "ada", model=GPT, daily=10)
    settled = await capped.reserve("ada", 3, team_id="eng", model=GPT)
    released = await capped.reserve("ada", 2, team_id="eng", model=GPT)
    expiring = await capped.reserve("ada", 4, team_id="eng", model=GPT, ttl_seconds=5)
    assert await _model_held(capped) == 9
    # settled by id alone: the hold's record names its model, so the cost
    # counts at it and the hold leaves the model's held amount
    record = await capped.settle(settled.id, "2.5")
    assert record.team_id == "eng"
    assert await _model_held(capped) == 6
    assert await capped.release(released) is True
    assert await capped.release(released) is False
    assert await _model_held(capped) == 4
    clock.advance(6)  # the next admission purges the expired hold
    assert await capped.remaining("ada", None, 0, model=GPT) == Decimal("7.5")
    assert await _model_held(capped) == 0
    assert await _held_keys(capped) == []  # at zero, no key is left
    # a settle replayed, and a late settle of the expired hold, move nothing
    await capped.settle(settled.id, "2.5")
    await capped.settle(expiring, 1)
    assert await _model_held(capped) == 0
    usage = (await capped.get_usage("ada", model=GPT))["user"].model
    assert usage is not None and usage.daily.spent == Decimal("3.5")
    entry = (await _entries(capped))[-1]
    assert (entry[FIELD["model"]], entry[FIELD["team_id"]]) == (GPT, "eng")
    team = await capped.get_team("eng")
    assert (team.held, team.members["ada"].held) == (0, 0)


async def test_a_model_given_on_a_team_settle_overrides_the_holds(
    capped: BudgetManager,
) -> None:
    await _team(capped)
    lease = await capped.reserve("ada", 3, team_id="eng", model=GPT)
    await capped.settle(lease, 2, model=MINI)
    assert await _model_held(capped) == 0
    usage = await capped.get_usage("ada", model=MINI)
    mini = usage["user"].model
    assert mini is not None and mini.daily.spent == 2
    assert (await _entries(capped))[-1][FIELD["model"]] == MINI


async def test_a_team_replay_keeps_the_model_in_its_fingerprint(
    capped: BudgetManager,
) -> None:
    await _team(capped)
    first = await capped.reserve(
        "ada", 1, team_id="eng", model=GPT, idempotency_key="k"
    )
    again = await capped.reserve(
        "ada", 1, team_id="eng", model=GPT, idempotency_key="k"
    )
    assert again.replayed and again.id == first.id
    with pytest.raises(IdempotencyConflictError):
        await capped.reserve("ada", 1, team_id="eng", model=MINI, idempotency_key="k")
    assert await _model_held(capped) == 1


async def test_without_model_caps_a_team_lease_still_names_its_model(
    budget: BudgetManager,
) -> None:
    await _team(budget)
    lease = await budget.reserve("ada", 3, team_id="eng", model=GPT)
    assert lease.model == GPT
    record = await budget.settle(lease, 2)
    assert record.model == GPT
    assert (await _entries(budget))[-1][FIELD["model"]] == GPT
    await budget.deduct("ada", 1, team_id="eng", model=GPT)
    assert await _held_keys(budget) == []


def test_without_model_caps_the_team_scripts_carry_nothing_of_them() -> None:
    constants = {name: "0" for name in SCRIPT_CONSTANTS}
    constants.update(BASE="sg:{sg}:", LOW_BALANCE="-1")
    for name in ("team_reserve", "team_reserve_up_to", "team_deduct"):
        off = configured_source(name, {**constants, "MODEL_CAPS": "0"})
        on = configured_source(name, {**constants, "MODEL_CAPS": "1"})
        assert b"model_admit" not in off and b"model_admit" in on
    for name in ("team_settle", "team_release"):
        off = configured_source(name, {**constants, "MODEL_CAPS": "0"})
        on = configured_source(name, {**constants, "MODEL_CAPS": "1"})
        assert b"model_unhold" not in off and b"model_unhold" in on
