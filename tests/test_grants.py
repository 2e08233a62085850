"""Grants: the order charges draw on them, expiry at the exact instant, the
balance they make up, debts, balances from before grants, the bound on a
call's work, and the sweep.

How: every test runs on the real Redis and on fakeredis (the ``budget`` /
``make_budget`` fixtures), with the injected clock (``clock``) moved across
expiries; what a grant has left is read with ``get_balance`` and the ledger
entries from the stream, so each assertion is about the values a user or an
analyst sees.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from conftest import FakeClock, MakeBudget, deployment_keys, stream_entries
from spendgate import (
    BudgetExceededError,
    BudgetManager,
    InsufficientCreditsError,
    InvalidAmountError,
    InvalidArgumentError,
)

D = Decimal


async def _entries(
    budget: BudgetManager, kind: str | None = None
) -> list[dict[str, str]]:
    """The ledger stream's entries (text), of one kind when given."""
    out = []
    for _sid, fields in await stream_entries(budget):
        entry = {k.decode(): v.decode() for k, v in fields.items()}
        if kind is None or entry["k"] == kind:
            out.append(entry)
    return out


async def _remaining(budget: BudgetManager, user: str) -> dict[str, Decimal]:
    """What each live grant of ``user`` has left, by kind."""
    return {g.kind: g.remaining for g in (await budget.get_balance(user)).grants}


# -- the order -------------------------------------------------------------------


async def test_a_promo_grant_is_used_before_a_paid_one(
    budget: BudgetManager, clock: FakeClock
) -> None:
    await budget.add_credits("ada", 10, kind="paid")  # never expires, priority 0
    await budget.add_credits(
        "ada", 5, kind="promo", expires_at=clock.now + timedelta(days=7)
    )
    await budget.record_spend("ada", 3)
    assert await _remaining(budget, "ada") == {"promo": D(2), "paid": D(10)}
    await budget.record_spend("ada", 4)  # the promo's 2, then 2 of the paid one
    assert await _remaining(budget, "ada") == {"paid": D(8)}
    assert (await budget.get_balance("ada")).total == D(8)


async def test_grants_are_drawn_by_priority_then_expiry_then_age(
    budget: BudgetManager, clock: FakeClock
) -> None:
    soon, later = clock.now + timedelta(days=1), clock.now + timedelta(days=2)
    await budget.add_credits("ada", 1, kind="p1-soon", priority=1, expires_at=soon)
    await budget.add_credits("ada", 1, kind="p0-never-old")
    clock.advance(1)
    await budget.add_credits("ada", 1, kind="p0-never-new")
    await budget.add_credits("ada", 1, kind="p0-later", expires_at=later)
    await budget.add_credits("ada", 1, kind="p0-soon", expires_at=soon)
    await budget.add_credits("ada", 1, kind="minus1", priority=-1)
    order = [g.kind for g in (await budget.get_balance("ada")).grants]
    assert order == [
        "minus1",
        "p0-soon",
        "p0-later",
        "p0-never-old",
        "p0-never-new",
        "p1-soon",
    ]
    for expected in order:
        await budget.record_spend("ada", 1)
        assert expected not in await _remaining(budget, "ada")


async def test_settle_and_deduct_draw_on_grants_too(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    budget = make_budget(enforce_balance=True)
    await budget.add_credits(
        "ada", 4, kind="promo", expires_at=clock.now + timedelta(1)
    )
    await budget.add_credits("ada", 10, kind="paid", priority=1)
    lease = await budget.reserve("ada", 3)
    await budget.settle(lease, 3)
    assert await _remaining(budget, "ada") == {"promo": D(1), "paid": D(10)}
    charged = await budget.deduct("ada", 2)
    assert charged.balance_after == D(9)
    assert await _remaining(budget, "ada") == {"paid": D(9)}


# -- expiry ------------------------------------------------------------------------


async def test_a_grant_stops_counting_exactly_at_its_expiry(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    budget = make_budget(enforce_balance=True)
    expires = clock.now + timedelta(hours=1)
    await budget.add_credits("ada", 5, kind="promo", expires_at=expires)
    clock.set(expires - timedelta(milliseconds=1))
    assert await budget.check_availability("ada", None, 5) is True
    assert (await budget.get_balance("ada")).available == D(5)
    clock.set(expires)
    with pytest.raises(BudgetExceededError) as refused:
        await budget.check_availability("ada", None, "0.000001")
    assert refused.value.window == "balance" and refused.value.limit == 0
    balance = await budget.get_balance("ada")
    assert (balance.total, balance.available, balance.grants) == (0, 0, [])
    # Expired by the first call that met it: one expire entry, at its expiry.
    expired = await _entries(budget, "expire")
    assert len(expired) == 1 and expired[0]["a"] == "5000000"
    assert int(expired[0]["t"]) == int(expires.timestamp() * 1000)
    assert (await budget.sweep_expired_credits()).count == 0  # nothing left to do


async def test_a_charge_skips_an_expired_grant(
    budget: BudgetManager, clock: FakeClock
) -> None:
    await budget.add_credits(
        "ada", 5, kind="promo", expires_at=clock.now + timedelta(1)
    )
    await budget.add_credits("ada", 5, kind="paid", priority=1)
    clock.advance(days=1)
    await budget.record_spend("ada", 2)  # enforce_balance off: still drawn on
    assert await _remaining(budget, "ada") == {"paid": D(3)}
    assert [e["a"] for e in await _entries(budget, "expire")] == ["5000000"]


async def test_admission_counts_only_unexpired_grants(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    budget = make_budget(enforce_balance=True)
    await budget.add_credits(
        "ada", 3, kind="promo", expires_at=clock.now + timedelta(1)
    )
    await budget.add_credits("ada", 2, kind="paid")
    assert await budget.remaining("ada") == D(5)
    clock.advance(days=1)
    assert await budget.remaining("ada") == D(2)
    with pytest.raises(BudgetExceededError):
        await budget.reserve("ada", "2.5")
    with pytest.raises(InsufficientCreditsError):
        await budget.deduct("ada", "2.5")


# -- debts, and balances from before grants ------------------------------------


async def test_a_fact_above_the_grants_goes_into_debt_which_the_next_credit_pays(
    budget: BudgetManager,
) -> None:
    await budget.add_credits("ada", 2)
    await budget.record_spend("ada", 5)  # a fact: recorded in full
    balance = await budget.get_balance("ada")
    assert (balance.total, balance.grants) == (D(-3), [])
    credit = await budget.add_credits("ada", 10, kind="paid")
    assert credit.balance == D(7)
    assert await _remaining(budget, "ada") == {"paid": D(7)}  # the debt paid first
    assert [e["a"] for e in await _entries(budget, "grant")] == ["2000000", "10000000"]
    await budget.add_credits("bob", 1)
    await budget.record_spend("bob", 4)
    assert (await budget.add_credits("bob", 2)).balance == D(-1)  # all to the debt
    assert (await budget.get_balance("bob")).grants == []


async def test_a_balance_from_before_grants_keeps_working(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    budget = make_budget(enforce_balance=True)
    # What add_credits left before grants: one integer key.
    await budget.redis.set(budget.keys.of("ada").balance("ada"), "7000000")
    assert (await budget.get_balance("ada")).total == D(7)
    assert await budget.remaining("ada") == D(7)
    # It is drawn on as a never-expiring grant of priority 0 older than any:
    # after expiring priority-0 grants, before the others.
    await budget.add_credits(
        "ada", 1, kind="promo", expires_at=clock.now + timedelta(1)
    )
    await budget.add_credits("ada", 1, kind="paid")
    await budget.add_credits("ada", 1, kind="later", priority=1)
    await budget.record_spend("ada", 3)  # the promo's 1, then 2 of the old balance
    assert await _remaining(budget, "ada") == {"paid": D(1), "later": D(1)}
    assert (await budget.get_balance("ada")).total == D(7)
    await budget.record_spend("ada", 6)  # the old 5, then the paid one
    assert await _remaining(budget, "ada") == {"later": D(1)}
    assert (await budget.get_usage("ada"))["user"].balance == D(1)


# -- the balance ---------------------------------------------------------------------


async def test_get_balance_without_enforcement_lists_grants_and_holds(
    budget: BudgetManager, clock: FakeClock
) -> None:
    empty = await budget.get_balance("nobody")
    assert (empty.total, empty.available, empty.held, empty.grants) == (0, 0, 0, [])
    expires = clock.now + timedelta(days=30)
    promo = await budget.add_credits(
        "ada", "2.5", kind="promo", expires_at=expires, metadata={"campaign": "x"}
    )
    await budget.add_credits("ada", 10, priority=2)
    await budget.reserve("ada", 4)
    balance = await budget.get_balance("ada")
    assert (balance.total, balance.held, balance.available) == (D("12.5"), 4, D("8.5"))
    first = balance.grants[0]
    assert (first.id, first.kind, first.remaining) == (
        promo.entry_id,
        "promo",
        D("2.5"),
    )
    assert (first.expires_at, first.priority, first.created_at) == (
        expires,
        0,
        clock.now,
    )
    assert (balance.grants[1].expires_at, balance.grants[1].priority) == (None, 2)
    grant = (await _entries(budget, "grant"))[0]
    assert grant["g"] == promo.entry_id
    assert '"campaign":"x"' in grant["md"] and '"kind":"promo"' in grant["md"]


# -- bounds ----------------------------------------------------------------------


async def test_work_per_call_is_bounded_past_grants_per_call(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    budget = make_budget(enforce_balance=True, grants_per_call=3)
    soon = clock.now + timedelta(hours=1)
    for _ in range(7):
        await budget.add_credits("ada", 1, kind="promo", expires_at=soon)
    await budget.add_credits("ada", 4, kind="paid")
    clock.advance(hours=2)
    # 7 expired, 3 expired per call: until all are, admission counts only the
    # part outside grants (here none): it refuses, never overshoots.
    with pytest.raises(BudgetExceededError):
        await budget.check_availability("ada", None, 1)
    with pytest.raises(BudgetExceededError):
        await budget.check_availability("ada", None, 1)
    assert await budget.remaining("ada") == D(4)  # the third call expired the last
    assert len(await _entries(budget, "expire")) == 7
    # A charge draws on at most 3 grants: the rest is a debt.
    for _ in range(4):
        await budget.add_credits("bob", 1, kind="small")
    await budget.record_spend("bob", 4)
    balance = await budget.get_balance("bob")
    assert (balance.total, [g.remaining for g in balance.grants]) == (0, [D(1)])


async def test_a_thousand_grants_are_drawn_one_call_at_a_time(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(enforce_balance=True)
    for _ in range(4):  # (within the connection pool)
        await asyncio.gather(*(budget.add_credits("ada", "0.01") for _ in range(250)))
    assert (await budget.get_balance("ada")).total == D(10)
    assert await budget.check_availability("ada", None, 10) is True
    await budget.record_spend("ada", "0.05")
    balance = await budget.get_balance("ada")
    assert balance.total == D("9.95") and len(balance.grants) == 995


# -- the sweep -----------------------------------------------------------------------


async def test_two_sweeps_at_once_write_each_expiry_once(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    budget = make_budget()
    other = make_budget()
    users = [f"user-{i}" for i in range(40)]
    for i, user in enumerate(users):
        for j in range(3):
            await budget.add_credits(
                user, D(i + 1) / 100, expires_at=clock.now + timedelta(minutes=j + 1)
            )
        await budget.add_credits(user, 1, kind="paid")  # never expires
    clock.advance(hours=1)
    total = sum(3 * D(i + 1) / 100 for i in range(len(users)))
    dry = await budget.sweep_expired_credits(dry_run=True, batch=7)
    assert (dry.count, dry.amount, dry.dry_run) == (120, total, True)
    assert await _entries(budget, "expire") == []  # a dry run changes nothing
    reports = await asyncio.gather(
        budget.sweep_expired_credits(batch=5), other.sweep_expired_credits(batch=5)
    )
    assert sum(r.count for r in reports) == 120
    assert sum(r.amount for r in reports) == total
    expired = await _entries(budget, "expire")
    assert len(expired) == 120 and len({e["g"] for e in expired}) == 120
    assert sum(D(e["a"]) for e in expired) / 1_000_000 == total
    for user in users[:3]:
        balance = await budget.get_balance(user)
        assert balance.total == 1 and [g.kind for g in balance.grants] == ["paid"]
    again = await budget.sweep_expired_credits()
    assert (again.count, again.amount) == (0, 0)
    for keys in budget.keys.buckets():
        assert await budget.redis.zcard(keys.grants_due) == 0


# -- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"amount": -1}, InvalidAmountError),
        ({"amount": "nan"}, InvalidAmountError),
        ({"expires_at": "tomorrow"}, InvalidArgumentError),
        ({"expires_at": "past"}, InvalidArgumentError),
        ({"expires_at": "naive"}, InvalidArgumentError),
        ({"priority": 1.5}, InvalidArgumentError),
        ({"priority": True}, InvalidArgumentError),
        ({"priority": 10**10}, InvalidArgumentError),
        ({"kind": ""}, InvalidArgumentError),
        ({"kind": "a:b"}, InvalidArgumentError),
        ({"kind": "x" * 33}, InvalidArgumentError),
        ({"metadata": {"grant": 1}}, InvalidArgumentError),
    ],
)
async def test_invalid_grants_are_refused_and_change_nothing(
    budget: BudgetManager, clock: FakeClock, arguments: dict[str, Any], error: type
) -> None:
    call: dict[str, Any] = {"amount": 5, **arguments}
    if call.get("expires_at") == "past":
        call["expires_at"] = clock.now
    elif call.get("expires_at") == "naive":
        call["expires_at"] = clock.now.replace(tzinfo=None) + timedelta(days=1)
    with pytest.raises(error):
        await budget.add_credits("ada", **call)
    assert await deployment_keys(budget) == []
