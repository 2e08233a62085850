"""Refunds: full and partial, never above the charge (also with 100 at once),
the counters of the charge's own day and month lowered, the money back where
it came from (a grant expired since gets nothing), idempotent, linked in the
ledger, off when ``refund_window_seconds`` is 0; and what a charge's refund
record costs.

How: on the real Redis and on fakeredis (``budget`` / ``make_budget``), with
the injected clock; balances through ``get_balance``, counters through
``get_usage``, entries from the ledger stream, the record's life with PTTL.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

import pytest

from conftest import FakeClock, MakeBudget, deployment_keys, stream_entries
from spendgate import (
    BudgetManager,
    ConfigurationError,
    IdempotencyConflictError,
    InvalidAmountError,
    InvalidArgumentError,
    RefundExceedsChargeError,
    UnknownEntryError,
)

D = Decimal


async def _entries(budget: BudgetManager, kind: str) -> list[dict[str, str]]:
    out = []
    for _sid, fields in await stream_entries(budget):
        entry = {k.decode(): v.decode() for k, v in fields.items()}
        if entry["k"] == kind:
            out.append(entry)
    return out


async def _spent(budget: BudgetManager, user: str, project: str | None = None) -> list:
    usage = await budget.get_usage(user, project)
    return [
        (u.daily.spent, u.monthly.spent)
        for u in (usage[s] for s in ("user", "project", "global") if s in usage)
    ]


async def _state(budget: BudgetManager) -> dict[bytes, bytes | None]:
    """Every key of the deployment with its value (its type, if not a string)."""
    out: dict[bytes, bytes | None] = {}
    for key in await deployment_keys(budget):
        kind = await budget.redis.type(key)
        if kind == b"string":
            out[key] = await budget.redis.get(key)
        else:
            out[key] = kind
    return out


async def test_a_full_refund_lowers_the_counters_and_gives_the_balance_back(
    budget: BudgetManager,
) -> None:
    await budget.add_credits("ada", 10)
    spent = await budget.record_spend("ada", "2.5", project_id="p", model="m")
    assert await _spent(budget, "ada", "p") == [(D("2.5"), D("2.5"))] * 3
    result = await budget.refund(spent.entry_id, reason="wrong model")
    assert (result.charge_id, result.refunded, result.refundable_left) == (
        spent.entry_id,
        D("2.5"),
        0,
    )
    assert result.balance_after == D(10) and not result.replayed
    assert await _spent(budget, "ada", "p") == [(0, 0)] * 3
    assert (await budget.get_balance("ada")).total == D(10)
    (entry,) = await _entries(budget, "refund")
    assert (entry["e"], entry["ln"], entry["a"]) == (
        result.entry_id,
        spent.entry_id,
        "2500000",
    )
    # the charge's user, project, model, and its day: the window it lowered
    assert (entry["u"], entry["p"], entry["m"], entry["w"]) == (
        "ada",
        "p",
        "m",
        "2026-03-15",
    )
    assert entry["md"] == '{"reason":"wrong model"}'


async def test_partial_refunds_add_up_to_the_charge_and_no_more(
    budget: BudgetManager,
) -> None:
    spent = await budget.record_spend("ada", 3)
    first = await budget.refund(spent.entry_id, 1)
    assert (first.refunded, first.refundable_left, first.balance_after) == (1, 2, None)
    before = await _state(budget)
    with pytest.raises(RefundExceedsChargeError) as refused:
        await budget.refund(spent.entry_id, "2.000001")
    assert (refused.value.refundable, refused.value.requested) == (2, D("2.000001"))
    assert await _state(budget) == before  # refused: nothing changed
    rest = await budget.refund(spent.entry_id)  # all that is left
    assert (rest.refunded, rest.refundable_left) == (2, 0)
    with pytest.raises(RefundExceedsChargeError):
        await budget.refund(spent.entry_id)
    assert await _spent(budget, "ada") == [(0, 0)] * 2


async def test_a_hundred_concurrent_partial_refunds_never_exceed_the_charge(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(enforce_balance=True)
    await budget.add_credits("ada", 100)
    spent = await budget.record_spend("ada", 10)

    async def one() -> Decimal:
        try:
            return (await budget.refund(spent.entry_id, "0.15")).refunded or D(0)
        except RefundExceedsChargeError:
            return D(0)

    refunded = await asyncio.gather(*(one() for _ in range(100)))
    assert sum(refunded) == D("9.9")  # 66 of them; a 67th would pass 10
    assert refunded.count(D("0.15")) == 66
    assert (await budget.get_balance("ada")).total == D("99.9")
    assert (await budget.get_usage("ada"))["user"].daily.spent == D("0.1")
    assert len(await _entries(budget, "refund")) == 66


async def test_a_grant_expired_since_gets_nothing_back(
    budget: BudgetManager, clock: FakeClock
) -> None:
    promo_end = clock.now + timedelta(hours=1)
    await budget.add_credits("ada", 2, kind="promo", expires_at=promo_end)
    await budget.add_credits("ada", 5, kind="paid", priority=1)
    spent = await budget.record_spend("ada", 4)  # promo 2, paid 2
    clock.set(promo_end)
    result = await budget.refund(spent.entry_id)
    # The paid part goes back; the promo's part expires at once.
    assert result.refunded == D(4) and result.balance_after == D(5)
    balance = await budget.get_balance("ada")
    assert [(g.kind, g.remaining) for g in balance.grants] == [("paid", D(5))]
    (forfeit,) = await _entries(budget, "expire")
    assert (forfeit["a"], forfeit["ln"]) == ("2000000", result.entry_id)
    assert await _spent(budget, "ada") == [(0, 0)] * 2  # the counters, in full


async def test_a_refund_first_to_see_a_grant_expired_reports_the_balance_without_it(
    budget: BudgetManager, clock: FakeClock
) -> None:
    promo_end = clock.now + timedelta(hours=1)
    await budget.add_credits("ada", 20, kind="promo", expires_at=promo_end)
    spent = await budget.record_spend("ada", 10)  # promo 10, 10 of it left
    clock.set(promo_end)
    # Nothing read the balance since the promo expired: the refund is the
    # first call to see it. Its part expires at once, and the promo's
    # remainder no longer counts in the balance the refund reports.
    result = await budget.refund(spent.entry_id, 5)
    balance = await budget.get_balance("ada")
    assert balance.total == D(0) and balance.grants == []
    assert result.balance_after == balance.total
    expired = sorted(e["a"] for e in await _entries(budget, "expire"))
    assert expired == ["10000000", "5000000"]  # the remainder, the refund's part


async def test_a_refund_brings_a_used_up_grant_back_with_its_terms(
    budget: BudgetManager, clock: FakeClock
) -> None:
    promo_end = clock.now + timedelta(hours=1)
    promo = await budget.add_credits(
        "ada", 2, kind="promo", expires_at=promo_end, priority=3
    )
    await budget.add_credits("ada", 5, kind="paid", priority=4)
    spent = await budget.record_spend("ada", 3)
    assert [g.kind for g in (await budget.get_balance("ada")).grants] == ["paid"]
    await budget.refund(spent.entry_id, "1.5")  # the paid 1, then the promo 0.5
    (back, paid) = (await budget.get_balance("ada")).grants
    assert (back.id, back.kind, back.priority) == (promo.entry_id, "promo", 3)
    assert (back.remaining, back.expires_at, paid.remaining) == (
        D("0.5"),
        promo_end,
        D(5),
    )
    clock.set(promo_end)  # and it expires as it would have
    assert (await budget.get_balance("ada")).total == D(5)


async def test_a_refund_of_a_debt_pays_it_back(make_budget: MakeBudget) -> None:
    budget = make_budget(enforce_balance=True)
    spent = await budget.record_spend("ada", 3)  # no credits: a debt of 3
    assert (await budget.get_balance("ada")).total == D(-3)
    result = await budget.refund(spent.entry_id, 1)
    assert result.balance_after == D(-2)


async def test_a_refund_lowers_the_counters_of_the_charges_own_day(
    budget: BudgetManager, clock: FakeClock
) -> None:
    spent = await budget.record_spend("ada", 2, project_id="p")
    clock.advance(days=1)
    await budget.record_spend("ada", 5, project_id="p")
    await budget.refund(spent.entry_id)
    assert await _spent(budget, "ada", "p") == [(D(5), D(5))] * 3  # month: 7 - 2
    clock.advance(days=-1)
    assert await _spent(budget, "ada", "p") == [(0, D(5))] * 3


async def test_settles_and_deducts_are_refundable(make_budget: MakeBudget) -> None:
    budget = make_budget(enforce_balance=True)
    await budget.add_credits("ada", 10)
    lease = await budget.reserve("ada", 4)
    settled = await budget.settle(lease, 3)
    charged = await budget.deduct("ada", 2)
    assert (await budget.refund(settled.entry_id)).balance_after == D(8)
    assert (await budget.refund(charged.entry_id)).balance_after == D(10)
    assert (await budget.get_usage("ada"))["user"].daily.spent == 0


async def test_a_refund_replayed_with_its_key_refunds_once(
    budget: BudgetManager,
) -> None:
    await budget.add_credits("ada", 10)
    spent = await budget.record_spend("ada", 4)
    first = await budget.refund(spent.entry_id, 1, idempotency_key="r-1")
    again = await budget.refund(spent.entry_id, 1, idempotency_key="r-1")
    assert again.replayed and again.entry_id == first.entry_id
    assert (again.refunded, again.refundable_left) == (1, 3)
    assert (await budget.get_balance("ada")).total == D(7)
    assert len(await _entries(budget, "refund")) == 1
    with pytest.raises(IdempotencyConflictError):
        await budget.refund(spent.entry_id, 2, idempotency_key="r-1")


async def test_unknown_entries_and_bad_arguments_change_nothing(
    budget: BudgetManager,
) -> None:
    spent = await budget.record_spend("ada", 4)
    before = await _state(budget)
    with pytest.raises(UnknownEntryError):
        await budget.refund("0" * 28)
    for amount, error in ((0, InvalidAmountError), (-1, InvalidAmountError)):
        with pytest.raises(error):
            await budget.refund(spent.entry_id, amount)
    with pytest.raises(InvalidArgumentError):
        await budget.refund(spent.entry_id, 1, reason="x" * 1001)
    with pytest.raises(InvalidArgumentError):
        await budget.refund("")
    assert await _state(budget) == before


async def test_the_refund_record_lives_the_refund_window(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(refund_window_seconds=3600)
    spent = await budget.record_spend("ada", 1)
    record = budget.keys.of_id(spent.entry_id).charge(spent.entry_id)
    ttl = await budget.redis.pttl(record)
    assert 3_590_000 < ttl <= 3_600_000
    await budget.refund(spent.entry_id, "0.5")  # keeps the record's TTL
    ttl = await budget.redis.pttl(record)
    assert 3_590_000 < ttl <= 3_600_000


async def test_no_refund_record_when_refunds_are_off(make_budget: MakeBudget) -> None:
    budget = make_budget(refund_window_seconds=0)
    spent = await budget.record_spend("ada", 1)
    record = budget.keys.of_id(spent.entry_id).charge(spent.entry_id)
    assert await budget.redis.exists(record) == 0
    with pytest.raises(ConfigurationError, match="refunds are off"):
        await budget.refund(spent.entry_id)
    # A charge made while they were off is not refundable once they are on.
    on = make_budget(key_prefix=budget.config.key_prefix)
    with pytest.raises(UnknownEntryError):
        await on.refund(spent.entry_id)
