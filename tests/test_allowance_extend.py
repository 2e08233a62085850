"""``extend`` counts what is left of a plan's allowance as balance, as
``reserve`` does.

On both backends, balances enforced: a plan user with an allowance of 100
and no balance reserves 30, extends by 60 (admitted: 90 of the 100 are then
held) and by 20 more (refused, every key as it was); a manager whose guess
of the user's plan is stale (by lease or by lease id alone) is corrected by
the script and extends on the retry; settling an extended lease draws on
the allowance first and then on the balance, to the micro-unit; a user
without a plan is admitted exactly as before, and a deployment whose
balances are not enforced sends, and reads, no plan at all.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from conftest import MakeBudget, stream_entries
from plan_helpers import snapshot
from spendgate import BudgetExceededError, BudgetManager


def _spy(budget: BudgetManager) -> list[tuple[str, Any]]:
    """The leases' scripts ``budget`` sends from now on, each with its last
    argument (the plan argument of reserve and extend); reads of the plans
    and price books are left out."""
    sent: list[tuple[str, Any]] = []
    run = budget._store.run

    async def spy(operation: str, keys: Any, args: Any, **kwargs: Any) -> Any:
        if operation in ("reserve", "extend", "settle", "release"):
            sent.append((operation, args[-1]))
        return await run(operation, keys, args, **kwargs)

    budget._store.run = spy  # type: ignore[method-assign]
    return sent


async def _on_plan(budget: BudgetManager, credits: int = 0) -> None:
    await budget.set_plan("pro", free_allowance=100, period="monthly")
    if credits:
        await budget.add_credits("ada", credits)
    await budget.assign_plan("ada", "pro")


async def test_extend_admits_up_to_the_allowance_left_and_no_further(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(enforce_balance=True)
    await _on_plan(budget)  # an allowance of 100, no balance
    lease = await budget.reserve("ada", "30")
    await budget.extend(lease, "60")
    assert lease.amount == Decimal(90)
    assert (await budget.get_usage("ada"))["user"].held == Decimal(90)
    before = await snapshot(budget)
    with pytest.raises(BudgetExceededError) as refused:
        await budget.extend(lease, "20")
    assert refused.value.window == "balance"
    assert refused.value.limit == Decimal(100)  # the allowance left, as balance
    assert await snapshot(budget) == before
    assert lease.amount == Decimal(90)
    # what is left fits exactly, by lease id too
    extended = await budget.extend(lease.id, "10")
    assert extended.amount == Decimal(100)
    settled = await budget.settle(lease, "100")
    assert settled.allowance_used == 100
    assert (await budget.get_balance("ada")).total == 0


async def test_a_stale_guess_of_the_plan_is_corrected_on_extend(
    make_budget: MakeBudget,
) -> None:
    first = make_budget(enforce_balance=True, model_caps=True, cap_actions=True)
    await _on_plan(first)
    lease = await first.reserve("ada", "30", model="gpt-x")
    # `other` never read ada's plan: it sends "no plan expected", the script
    # answers with the hold's user and plan, and the retry extends
    other = make_budget(enforce_balance=True, model_caps=True, cap_actions=True)
    sent = _spy(other)
    await other.extend(lease, "50")
    assert [op for op, _ in sent] == ["extend", "extend"]
    assert sent[0][1] == "="
    assert sent[1][1].startswith("=") and sent[1][1].endswith("|pro")
    assert lease.amount == Decimal(80)
    # now known: one script
    sent.clear()
    await other.extend(lease, "10")
    assert [op for op, _ in sent] == ["extend"]
    # by lease id alone the user is not known: the script names it (as
    # settle's does)
    third = make_budget(enforce_balance=True, model_caps=True, cap_actions=True)
    sent = _spy(third)
    assert (await third.extend(lease.id, "10")).amount == Decimal(100)
    assert [op for op, _ in sent] == ["extend", "extend"]
    with pytest.raises(BudgetExceededError) as refused:
        await third.extend(lease.id, "0.01")
    assert refused.value.limit == Decimal(100)
    # the plan taken away: `other`'s guess is stale again, corrected by the
    # script, and there is no allowance left to count
    await first.unassign_plan("ada")
    sent = _spy(other)
    with pytest.raises(BudgetExceededError) as refused:
        await other.extend(lease, "0.01")
    assert refused.value.limit == 0
    assert [op for op, _ in sent] == ["extend", "extend"]
    assert sent[1][1] == "="
    assert (await first.settle(lease, "100")).allowance_used == 0


async def test_settle_after_extend_draws_the_allowance_then_the_balance(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(enforce_balance=True)
    await _on_plan(budget, credits=50)
    lease = await budget.reserve("ada", "30")
    await budget.extend(lease, "90")  # 120 of the 150 (allowance + balance)
    with pytest.raises(BudgetExceededError):
        await budget.extend(lease, "30.000001")
    settled = await budget.settle(lease, "120.000001")
    assert settled.allowance_used == 100
    assert settled.estimate == Decimal(120)
    assert (await budget.get_balance("ada")).total == Decimal("29.999999")
    plan = await budget.get_user_plan("ada")
    assert plan is not None
    assert (plan.allowance_used, plan.allowance_remaining) == (100, 0)
    ledger = await stream_entries(budget)
    rows = [f for _, f in ledger if f[b"k"] == b"settle"]
    assert [(f[b"a"], f[b"est"], f[b"au"]) for f in rows] == [
        (b"120000001", b"120000000", b"100000000")
    ]


async def test_a_user_without_a_plan_extends_as_before(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(enforce_balance=True)
    await _on_plan(budget)  # plans exist; bob has none
    await budget.add_credits("bob", 10)
    sent = _spy(budget)
    lease = await budget.reserve("bob", "4")
    await budget.extend(lease, "6")
    before = await snapshot(budget)
    with pytest.raises(BudgetExceededError) as refused:
        await budget.extend(lease, "0.01")
    assert refused.value.limit == Decimal(10)
    assert await snapshot(budget) == before
    # one script each, the plan checked with one GET ("=")
    assert sent == [("reserve", "="), ("extend", "="), ("extend", "=")]
    assert (await budget.settle(lease, "10")).allowance_used == 0
    assert (await budget.get_balance("bob")).total == 0


async def test_no_plan_is_sent_where_balances_are_not_enforced(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(daily_user_limit="50")
    await _on_plan(budget, credits=5)
    lease = await budget.reserve("ada", "30")
    sent = _spy(budget)
    await budget.extend(lease, "20")  # the cap, not the balance, bounds it
    with pytest.raises(BudgetExceededError) as refused:
        await budget.extend(lease, "0.01")
    assert refused.value.window == "daily"
    await budget.extend(lease, 0, ttl_seconds=600)  # nothing added
    assert sent == [("extend", ""), ("extend", ""), ("extend", "")]
    assert (await budget.settle(lease, "50")).allowance_used == 50
