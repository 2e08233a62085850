"""A plan's ``rate_overrides`` price its users, and only them, in ``deduct``.

On both backends: with a price book active, and with none (the plan's
overrides then price the model part, the model catalog everyone else); a
manager whose idea of a user's plan is stale (another instance assigned or
took the plan away) still prices by the user's plan in Redis, because the
deduct script checks it and the charge is priced again; the ledger entry
names the plan. With no plan anywhere, a deduct sends nothing about plans
and reads no key for them.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from conftest import MakeBudget
from plan_helpers import BURSAR_BOOK_WITH_PLANS
from spendgate import BudgetManager, UsageMetrics

USAGE = UsageMetrics(model="gpt-x", input_tokens=1000, output_tokens=100)
# the book's _default: 1000 * 0.01 + 100 * 0.03; the free plan's: 20 + 6
BOOK_PRICE = Decimal(13)
FREE_PRICE = Decimal(26)


async def _pricing_of(budget: BudgetManager, entry_id: str) -> dict[str, Any]:
    for _, fields in await budget.redis.xrange(budget.keys.ledger):
        if fields[b"e"].decode() == entry_id:
            pricing: dict[str, Any] = json.loads(fields[b"md"])["pricing"]
            return pricing
    raise AssertionError(f"no ledger entry {entry_id}")


async def test_a_plans_rate_override_prices_its_users_and_not_others(
    budget: BudgetManager,
) -> None:
    await budget.publish_pricing(BURSAR_BOOK_WITH_PLANS)
    for user in ("ada", "bob", "cy"):
        await budget.add_credits(user, 1000)
    await budget.assign_plan("ada", "free")
    await budget.assign_plan("cy", "pro")  # a plan without overrides
    ada = await budget.deduct("ada", USAGE)
    bob = await budget.deduct("bob", USAGE)
    cy = await budget.deduct("cy", USAGE)
    # (the plans' free allowances pay: the balances stay whole)
    assert ada.amount == FREE_PRICE and ada.balance_after == 1000
    assert ada.allowance_used == FREE_PRICE
    assert bob.amount == BOOK_PRICE and bob.balance_after == 1000 - BOOK_PRICE
    assert bob.allowance_used == 0
    assert cy.amount == BOOK_PRICE and cy.allowance_used == BOOK_PRICE
    assert (await _pricing_of(budget, ada.entry_id))["plan"] == "free"
    assert "plan" not in await _pricing_of(budget, bob.entry_id)
    assert (await _pricing_of(budget, cy.entry_id))["plan"] == "pro"


async def test_a_set_plans_override_wins_and_falls_back_to_the_book(
    budget: BudgetManager,
) -> None:
    await budget.publish_pricing(BURSAR_BOOK_WITH_PLANS)
    await budget.set_plan("pro", rate_overrides={"gpt-x": "input_tokens * 0.001"})
    await budget.add_credits("ada", 100)
    await budget.assign_plan("ada", "pro")
    assert (await budget.deduct("ada", USAGE)).amount == Decimal(1)
    other = UsageMetrics(model="other", input_tokens=1000, output_tokens=100)
    assert (await budget.deduct("ada", other)).amount == BOOK_PRICE


async def test_with_no_book_the_overrides_price_the_plans_users(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(
        model_price_overrides={
            "gpt-x": {"input_cost_per_token": "0.002", "output_cost_per_token": "0"}
        }
    )
    await budget.set_plan("pro", rate_overrides={"_default": "input_tokens * 0.0005"})
    await budget.add_credits("ada", 10)
    await budget.add_credits("bob", 10)
    await budget.assign_plan("ada", "pro")
    ada = await budget.deduct("ada", USAGE)
    bob = await budget.deduct("bob", USAGE)
    assert ada.amount == Decimal("0.5") and ada.price_version is None
    assert bob.amount == Decimal(2)


async def test_a_stale_idea_of_the_users_plan_is_corrected_by_the_script(
    make_budget: MakeBudget,
) -> None:
    pricer, operator = make_budget(), make_budget()
    await operator.publish_pricing(BURSAR_BOOK_WITH_PLANS)
    await operator.add_credits("ada", 1000)
    # the pricer has priced ada as a user without a plan...
    assert (await pricer.deduct("ada", USAGE)).amount == BOOK_PRICE
    await operator.assign_plan("ada", "free")
    # ...and now prices her for the plan another instance gave her
    charged = await pricer.deduct("ada", USAGE)
    assert charged.amount == FREE_PRICE
    assert (await _pricing_of(pricer, charged.entry_id))["plan"] == "free"
    await operator.unassign_plan("ada")
    assert (await pricer.deduct("ada", USAGE)).amount == BOOK_PRICE


async def test_without_plans_a_deduct_sends_and_reads_nothing_about_them(
    budget: BudgetManager,
) -> None:
    await budget.publish_pricing({"models": {"_default": "input_tokens * 0.01"}})
    await budget.add_credits("ada", 100)
    calls: list[tuple[str, tuple[Any, ...]]] = []
    run = budget._store.run

    async def spy(operation: str, keys: Any, args: Any, **options: Any) -> Any:
        calls.append((operation, args))
        return await run(operation, keys, args, **options)

    budget._store.run = spy  # type: ignore[method-assign]
    await budget.deduct("ada", USAGE)
    await budget.deduct("ada", USAGE)
    deducts = [args for operation, args in calls if operation == "deduct"]
    assert len(deducts) == 2
    assert all(args[-1] == "" for args in deducts)  # the plan check: none
    assert {operation for operation, _ in calls} <= {"deduct", "pricing_get"}


async def test_a_plans_user_is_priced_in_one_round_trip_once_known(
    budget: BudgetManager,
) -> None:
    await budget.publish_pricing(BURSAR_BOOK_WITH_PLANS)
    await budget.add_credits("ada", 1000)
    await budget.assign_plan("ada", "free")
    sent: list[str] = []
    run = budget._store.run

    async def spy(operation: str, keys: Any, args: Any, **options: Any) -> Any:
        sent.append(operation)
        return await run(operation, keys, args, **options)

    budget._store.run = spy  # type: ignore[method-assign]
    for _ in range(3):
        assert (await budget.deduct("ada", USAGE)).amount == FREE_PRICE
    assert [op for op in sent if op != "pricing_get"] == ["deduct"] * 3
