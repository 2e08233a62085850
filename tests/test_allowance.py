"""A plan's free allowance, drawn on in the charge scripts themselves.

On both backends, with the injected clock: usage of 60 + 60 against an
allowance of 100 takes 100 from the allowance and 20 from the balance, one
script per charge (record, settle, deduct), and the ledger rows say so; the
allowance renews exactly at the cycle's boundary (a user assigned on Jan 31
renews on Feb 29, then Mar 31); admission counts the allowance left as
balance; a refund gives an allowance-paid charge back to the period it was
drawn in, not to a later one; replays draw nothing twice; a manager whose
guess of the user's plan is stale is corrected by the script; a user
without a plan is charged exactly as before.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from conftest import FakeClock, MakeBudget, stream_entries
from spendgate import BudgetExceededError, BudgetManager, InsufficientCreditsError
from spendgate.core.windows import to_ms


def _count_scripts(budget: BudgetManager) -> list[str]:
    """The operations ``budget`` sends from now on, in order."""
    sent: list[str] = []
    run = budget._store.run

    async def counted(operation: str, *args: Any, **kwargs: Any) -> Any:
        sent.append(operation)
        return await run(operation, *args, **kwargs)

    budget._store.run = counted  # type: ignore[method-assign]
    return sent


async def _ledger(budget: BudgetManager) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in await stream_entries(budget)]


async def _used(budget: BudgetManager, user: str, start: datetime) -> int | None:
    """The allowance counter of the period starting at ``start`` (micro-units)."""
    raw = await budget.redis.get(budget.keys.of(user).allowance(user, to_ms(start)))
    return None if raw is None else int(raw)


async def _on_plan(budget: BudgetManager, user: str = "ada", credits: int = 50) -> None:
    await budget.set_plan("pro", free_allowance=100, period="monthly")
    if credits:
        await budget.add_credits(user, credits)
    await budget.assign_plan(user, "pro")


async def test_record_60_and_60_takes_100_from_the_allowance_and_20_from_the_balance(
    budget: BudgetManager,
) -> None:
    await _on_plan(budget)
    sent = _count_scripts(budget)
    first = await budget.record_spend("ada", "60")
    second = await budget.record_spend("ada", "60")
    assert sent == ["record", "record"]  # one script each
    assert (first.allowance_used, second.allowance_used) == (60, 40)
    assert (await budget.get_balance("ada")).total == Decimal(30)
    plan = await budget.get_user_plan("ada")
    assert plan is not None
    assert (plan.allowance_used, plan.allowance_remaining) == (100, 0)
    # the spent counters count the whole charges
    assert (await budget.get_usage("ada"))["user"].daily.spent == Decimal(120)
    rows = [f for f in await _ledger(budget) if f[b"k"] == b"spend"]
    assert [(f[b"a"], f[b"au"]) for f in rows] == [
        (b"60000000", b"60000000"),
        (b"60000000", b"40000000"),
    ]


async def test_deduct_and_settle_draw_on_the_allowance_first(
    budget: BudgetManager,
) -> None:
    await _on_plan(budget)
    sent = _count_scripts(budget)
    first = await budget.deduct("ada", "60")
    assert (first.allowance_used, first.balance_after) == (60, 50)
    lease = await budget.reserve("ada", "60")
    settled = await budget.settle(lease, "60")
    assert sent == ["deduct", "reserve", "settle"]
    assert settled.allowance_used == 40
    assert (await budget.get_balance("ada")).total == Decimal(30)
    # a deduct once the allowance is gone: all from the balance
    third = await budget.deduct("ada", "10")
    assert (third.allowance_used, third.balance_after) == (0, 20)
    rows = [f for f in await _ledger(budget) if f[b"k"] in (b"spend", b"settle")]
    assert [f[b"au"] for f in rows] == [b"60000000", b"40000000", b""]


async def test_a_user_without_a_plan_is_charged_as_before(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(enforce_balance=True)
    await _on_plan(budget)  # plans exist, ada has one
    await budget.add_credits("bob", 50)
    spent = await budget.record_spend("bob", "20")
    charged = await budget.deduct("bob", "10")
    lease = await budget.reserve("bob", "20")
    settled = await budget.settle(lease.id, "20")
    assert (spent.allowance_used, charged.allowance_used, settled.allowance_used) == (
        0,
        0,
        0,
    )
    assert (await budget.get_balance("bob")).total == 0
    assert await budget.get_user_plan("bob") is None
    with pytest.raises(BudgetExceededError):
        await budget.check_availability("bob", estimated_cost="0.01")
    allowances = budget.keys.of("bob").base + "al:*"
    keys = [k async for k in budget.redis.scan_iter(match=allowances)]
    assert not [k for k in keys if k.endswith(b":bob")]


async def test_a_deployment_without_plans_sends_no_plan_to_deduct(
    budget: BudgetManager,
) -> None:
    await budget.add_credits("bob", 50)
    sent_args: list[Any] = []
    run = budget._store.run

    async def spy(operation: str, keys: Any, args: Any, **kwargs: Any) -> Any:
        sent_args.append((operation, args[-1]))
        return await run(operation, keys, args, **kwargs)

    budget._store.run = spy  # type: ignore[method-assign]
    await budget.deduct("bob", "1")
    await budget.record_spend("bob", "1")
    await budget.check_availability("bob", estimated_cost="1")
    # deduct: nothing read; a fact: one GET of the user's plan ("="); an
    # admission where balances are not enforced: nothing
    assert [a for a in sent_args if a[0] != "pricing_get"] == [
        ("deduct", ""),
        ("record", "="),
        ("check", ""),
    ]
    assert (await budget.get_balance("bob")).total == Decimal(48)


async def test_the_allowance_renews_exactly_at_the_boundary_of_a_jan_31_cycle(
    budget: BudgetManager, clock: FakeClock
) -> None:
    jan31 = datetime(2028, 1, 31, 10, 0, tzinfo=UTC)  # 2028: a leap year
    feb29 = datetime(2028, 2, 29, 10, 0, tzinfo=UTC)
    mar31 = datetime(2028, 3, 31, 10, 0, tzinfo=UTC)
    clock.set(jan31)
    await _on_plan(budget, credits=1000)
    ms = timedelta(milliseconds=1)
    clock.set(feb29 - ms)
    assert (await budget.record_spend("ada", "100")).allowance_used == 100
    assert (await budget.record_spend("ada", "1")).allowance_used == 0
    clock.set(feb29)  # the boundary instant belongs to the new period
    assert (await budget.deduct("ada", "30")).allowance_used == 30
    clock.set(mar31 - ms)
    assert (await budget.deduct("ada", "80")).allowance_used == 70
    clock.set(mar31)
    assert (await budget.record_spend("ada", "5")).allowance_used == 5
    assert await _used(budget, "ada", jan31) == 100_000_000
    assert await _used(budget, "ada", feb29) == 100_000_000
    assert await _used(budget, "ada", mar31) == 5_000_000
    assert (await budget.get_balance("ada")).total == Decimal(1000 - 1 - 10)
    plan = await budget.get_user_plan("ada")
    assert plan is not None
    assert plan.period_start == mar31
    assert plan.resets_at == datetime(2028, 4, 30, 10, 0, tzinfo=UTC)


async def test_admission_counts_the_allowance_left_as_balance(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(enforce_balance=True)
    await _on_plan(budget, credits=0)  # no balance at all
    assert await budget.check_availability("ada", estimated_cost="100")
    with pytest.raises(BudgetExceededError):
        await budget.check_availability("ada", estimated_cost="100.01")
    with pytest.raises(InsufficientCreditsError):
        await budget.deduct("ada", "100.01")
    lease = await budget.reserve("ada", "70")
    with pytest.raises(BudgetExceededError):
        await budget.reserve("ada", "31")  # 70 of the 100 are held
    up_to = await budget.reserve_up_to("ada", "50")
    assert up_to.amount == Decimal(30)
    await budget.release(up_to)
    await budget.settle(lease, "70")
    charged = await budget.deduct("ada", "30")
    assert (charged.allowance_used, charged.balance_after) == (30, 0)
    with pytest.raises(InsufficientCreditsError):
        await budget.deduct("ada", "0.01")
    assert (await budget.get_balance("ada")).total == 0


async def test_concurrent_charges_draw_exactly_the_allowance(
    budget: BudgetManager,
) -> None:
    await _on_plan(budget, credits=1000)
    results = await asyncio.gather(*(budget.record_spend("ada", 1) for _ in range(200)))
    assert sum(r.allowance_used for r in results) == 100
    assert (await budget.get_balance("ada")).total == Decimal(900)


async def test_a_refund_restores_the_allowance_of_the_period_it_was_drawn_in(
    budget: BudgetManager, clock: FakeClock
) -> None:
    start = clock.now
    await _on_plan(budget, credits=100)
    first = await budget.record_spend("ada", "60")  # all from the allowance
    mixed = await budget.deduct("ada", "60")  # 40 allowance + 20 balance
    assert (first.allowance_used, mixed.allowance_used) == (60, 40)
    next_period = datetime(2026, 4, 15, 12, 0, tzinfo=UTC)
    clock.set(next_period + timedelta(days=1))
    later = await budget.record_spend("ada", "30")
    assert later.allowance_used == 30
    # the mixed charge: the balance's part back first, then the allowance's
    await budget.refund(mixed.entry_id, "30")
    assert (await budget.get_balance("ada")).total == Decimal(100)
    assert await _used(budget, "ada", start) == 90_000_000
    await budget.refund(first.entry_id)
    assert await _used(budget, "ada", start) == 30_000_000
    # the later period's allowance is untouched
    assert await _used(budget, "ada", next_period) == 30_000_000
    plan = await budget.get_user_plan("ada")
    assert plan is not None and plan.allowance_used == 30
    # a refund never takes the counter below zero (an operator may have
    # lowered it since)
    await budget.redis.set(
        budget.keys.of("ada").allowance("ada", to_ms(start)), "5000000", keepttl=True
    )
    await budget.refund(mixed.entry_id)
    assert await _used(budget, "ada", start) == 0
    assert (await budget.get_balance("ada")).total == Decimal(100)


async def test_replays_draw_nothing_twice(budget: BudgetManager) -> None:
    await _on_plan(budget)
    first = await budget.record_spend("ada", "60", idempotency_key="k1")
    again = await budget.record_spend("ada", "60", idempotency_key="k1")
    assert again.replayed and again.allowance_used == first.allowance_used == 60
    charged = await budget.deduct("ada", "30", idempotency_key="k2")
    recharged = await budget.deduct("ada", "30", idempotency_key="k2")
    assert recharged.replayed and recharged.allowance_used == 30
    lease = await budget.reserve("ada", "20")
    settled = await budget.settle(lease, "20")
    resettled = await budget.settle(lease, "20")
    assert resettled.replayed and resettled.allowance_used == settled.allowance_used
    assert settled.allowance_used == 10
    plan = await budget.get_user_plan("ada")
    assert plan is not None and plan.allowance_used == 100
    assert (await budget.get_balance("ada")).total == Decimal(40)
    assert charged.allowance_used == 30


async def test_a_stale_guess_of_the_plan_is_corrected_by_the_script(
    make_budget: MakeBudget,
) -> None:
    first, other = make_budget(), make_budget()
    await _on_plan(first)
    # `other` never read ada's plan: its scripts answer with it, once
    sent = _count_scripts(other)
    spent = await other.record_spend("ada", "10")
    assert spent.allowance_used == 10
    assert sent.count("record") == 2
    # a lease settled by its id alone: the script names the hold's user
    lease = await first.reserve("ada", "10")
    third = make_budget()
    assert (await third.settle(lease.id, "10")).allowance_used == 10
    # the plan taken away: the stale guess draws nothing
    await first.unassign_plan("ada")
    assert (await other.record_spend("ada", "10")).allowance_used == 0
    assert (await first.get_balance("ada")).total == Decimal(40)


async def test_a_spooled_fact_replays_leniently(budget: BudgetManager) -> None:
    await _on_plan(budget)
    replayer = budget._replayer
    # a fact spooled for a plan the user no longer has: recorded, no
    # allowance drawn (a replay is never refused over a plan)
    args = budget._fact_head(budget._now_ms(), 10_000_000) + (
        "",
        "e" * 28,
        "ada",
        "",
        "",
        "",
        "",
        "=0|100000000|86400000|1|gone",
    )
    from spendgate.core.operations import named_args
    from spendgate.durability.spool import SpooledFact

    fact = SpooledFact("record", named_args("record", args), info={})
    assert await replayer.replay_one(fact) is None
    assert (await budget.get_balance("ada")).total == Decimal(40)
    plan = await budget.get_user_plan("ada")
    assert plan is not None and plan.allowance_used == 0


async def test_admission_with_per_model_caps_and_cap_actions_counts_the_allowance(
    make_budget: MakeBudget,
) -> None:
    # The plan argument comes before the hooked model: both reach the script,
    # also when a stale guess makes the call again.
    first = make_budget(enforce_balance=True, model_caps=True, cap_actions=True)
    await _on_plan(first, credits=0)
    await first.set_limits("user", "ada", model="gpt-x", daily=50)
    other = make_budget(enforce_balance=True, model_caps=True, cap_actions=True)
    assert await other.check_availability("ada", estimated_cost="50", model="gpt-x")
    with pytest.raises(BudgetExceededError):
        await other.check_availability("ada", estimated_cost="51", model="gpt-x")
    lease = await other.reserve("ada", "40", model="gpt-x")
    up_to = await other.reserve_up_to("ada", "100", model="other")
    assert up_to.amount == Decimal(60)  # the allowance left beside the hold
    await other.release(up_to)
    assert (await other.settle(lease, "40")).allowance_used == 40
    charged = await other.deduct("ada", "60")
    assert (charged.allowance_used, charged.balance_after) == (60, 0)
