"""A settle's record names the model its cost counted at, by lease id too.

How: on both backends, with ``model_caps`` on, holds are taken for a model
(on the user's balance and on a team's pool) and settled by their id alone,
as the HTTP service and the CLI settle: the ``SpendRecord`` must name the
hold's model, the one the script counted the cost at and wrote on the
ledger; a settle naming another model names that one; a replay names the
first settle's model, whatever the retry says. Without ``model_caps`` the
hold remembers no model: a settle by id names what the call named.
"""

from __future__ import annotations

from typing import Any

import pytest

from conftest import MakeBudget
from spendgate import BudgetManager
from spendgate.core.protocol import FIELD

GPT, MINI = "gpt-4o", "gpt-4o-mini"


async def _ledger_models(budget: BudgetManager) -> list[str]:
    rows = await budget.redis.xrange(budget.keys.ledger)
    field = FIELD["model"].encode()
    return [fields.get(field, b"").decode() for _, fields in rows]


@pytest.fixture(params=[None, "eng"], ids=["own", "team"])
async def capped(make_budget: MakeBudget, request: pytest.FixtureRequest) -> Any:
    budget = make_budget(model_caps=True)
    await budget.add_credits("ada", 100)
    if request.param is not None:
        await budget.create_team("eng", initial_balance=100)
        await budget.add_team_member("eng", "ada")
    return budget, request.param


async def test_a_settle_by_lease_id_names_the_holds_model(capped: Any) -> None:
    budget, team = capped
    lease = await budget.reserve("ada", 2, model=GPT, team_id=team)
    record = await budget.settle(lease.id, 3)
    assert (record.model, record.replayed, record.team_id) == (GPT, False, team)
    again = await budget.settle(lease.id, 3)
    assert (again.model, again.replayed) == (GPT, True)
    assert (await _ledger_models(budget))[-1] == GPT


async def test_a_settle_naming_another_model_names_it_and_its_replay_too(
    capped: Any,
) -> None:
    budget, team = capped
    lease = await budget.reserve("ada", 2, model=GPT, team_id=team)
    record = await budget.settle(lease.id, 1, model=MINI)
    assert record.model == MINI
    # the retry names no model, or the hold's: the first settle's stands
    assert (await budget.settle(lease.id, 1)).model == MINI
    assert (await budget.settle(lease, 1)).model == MINI
    assert (await _ledger_models(budget))[-1] == MINI
    usage = await budget.get_usage("ada", model=MINI)
    assert usage["user"].model is not None
    assert usage["user"].model.daily.spent == 1


async def test_a_hold_without_a_model_settles_without_one(capped: Any) -> None:
    budget, team = capped
    lease = await budget.reserve("ada", 2, team_id=team)
    assert (await budget.settle(lease.id, 2)).model is None
    assert (await budget.settle(lease.id, 2)).model is None
    named = await budget.reserve("ada", 2, team_id=team)
    assert (await budget.settle(named.id, 2, model=MINI)).model == MINI
    assert (await budget.settle(named.id, 2)).model == MINI


async def test_without_model_caps_a_settle_names_what_the_call_named(
    budget: BudgetManager,
) -> None:
    lease = await budget.reserve("ada", 2, model=GPT)
    assert (await budget.settle(lease.id, 2)).model is None
    other = await budget.reserve("ada", 2, model=GPT)
    assert (await budget.settle(other, 2)).model == GPT
