"""Leases and balances.

A hold counts against every scope until settled, released or expired (the
injected clock passes its TTL; no janitor runs). Settle is idempotent, settle
after release is refused, settle above the estimate and after expiry are
recorded (late). Balances: credits, admission against ``min_balance`` with
holds, facts that go below it. Both backends.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from conftest import FakeClock, MakeBudget
from spendgate import (
    BudgetExceededError,
    BudgetManager,
    IdempotencyConflictError,
    LeaseStateError,
)


async def test_hold_counts_against_every_scope(make_budget: MakeBudget) -> None:
    budget = make_budget(
        daily_user_limit="10", daily_project_limit="10", daily_global_limit="10"
    )
    lease = await budget.reserve("alice", "4", project_id="p")
    usage = await budget.get_usage("alice", "p")
    for scope in ("user", "project", "global"):
        assert usage[scope].held == Decimal("4")
        assert usage[scope].daily.held == Decimal("4")
        assert usage[scope].daily.remaining == Decimal("6")
    with pytest.raises(BudgetExceededError) as refused:
        await budget.check_availability("bob", "p", "6.5")
    assert refused.value.scope == "project" and refused.value.held == Decimal("4")
    assert lease.amount == Decimal("4") and lease.project_id == "p"


async def test_release_frees_the_hold_and_charges_nothing(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(daily_user_limit="5")
    lease = await budget.reserve("alice", "5")
    with pytest.raises(BudgetExceededError):
        await budget.check_availability("alice", None, "0.01")
    assert await budget.release(lease) is True
    assert await budget.release(lease) is False  # idempotent
    usage = await budget.get_usage("alice")
    assert usage["user"].held == 0 and usage["user"].daily.spent == 0
    assert await budget.check_availability("alice", None, "5") is True


async def test_settle_charges_actual_and_is_idempotent(make_budget: MakeBudget) -> None:
    budget = make_budget(daily_user_limit="10")
    lease = await budget.reserve("alice", "3", project_id="p")
    record = await budget.settle(lease, "1.25", model="gpt-4o")
    again = await budget.settle(lease.id, "1.25", model="gpt-4o")
    assert (record.kind, record.amount, record.estimate) == (
        "settle",
        Decimal("1.25"),
        Decimal("3"),
    )
    assert record.user_id == "alice" and record.project_id == "p" and not record.late
    assert again.replayed and again.entry_id == record.entry_id and not record.replayed
    usage = await budget.get_usage("alice", "p")
    assert usage["user"].daily.spent == Decimal("1.25")
    assert usage["project"].daily.spent == Decimal("1.25")
    assert usage["user"].held == 0 and usage["global"].held == 0
    with pytest.raises(IdempotencyConflictError):
        await budget.settle(lease, "2")
    with pytest.raises(LeaseStateError):
        await budget.release(lease)


async def test_settle_after_release_is_refused(make_budget: MakeBudget) -> None:
    budget = make_budget()
    lease = await budget.reserve("alice", "1")
    await budget.release(lease)
    with pytest.raises(LeaseStateError) as refused:
        await budget.settle(lease, "1")
    assert refused.value.state == "released"
    assert (await budget.get_usage("alice"))["user"].daily.spent == 0


async def test_unknown_lease_is_refused(budget: BudgetManager) -> None:
    with pytest.raises(LeaseStateError):
        await budget.settle("no-such-lease", "1")
    with pytest.raises(LeaseStateError):
        await budget.release("no-such-lease")


async def test_settle_above_the_estimate_records_the_actual(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(daily_user_limit="2")
    lease = await budget.reserve("alice", "1")
    record = await budget.settle(lease, "3.5")
    assert record.amount == Decimal("3.5")
    usage = await budget.get_usage("alice")
    assert usage["user"].daily.spent == Decimal("3.5") and usage["user"].held == 0


async def test_overlapping_holds_leave_no_key_once_all_have_ended(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    budget = make_budget(daily_user_limit="10")
    held_keys = [
        budget.keys.held("user", "alice"),
        budget.keys.held("project", "p"),
        budget.keys.held("global", ""),
    ]
    first = await budget.reserve("alice", "2", project_id="p")
    second = await budget.reserve("alice", "3", project_id="p")
    await budget.reserve("alice", "1", project_id="p", ttl_seconds=5)  # expires
    await budget.settle(first, "2.5")
    usage = await budget.get_usage("alice", "p")
    for scope in ("user", "project", "global"):
        assert usage[scope].held == Decimal("4")
    assert await budget.release(second) is True
    assert (await budget.get_usage("alice", "p"))["project"].held == Decimal("1")
    clock.advance(6)  # the third expires and is purged by the next admission
    assert await budget.check_availability("alice", "p", "7.5") is True
    assert await budget.redis.exists(*held_keys) == 0
    assert (await budget.get_usage("alice", "p"))["user"].daily.spent == Decimal("2.5")


async def test_settle_charges_a_kept_balance_when_not_enforced(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    # Settle reads the balance with the held amounts; a late settle (its hold
    # already purged) looks it up on its own. Both charge it, neither makes one.
    budget = make_budget()
    await budget.add_credits("alice", "5")
    await budget.settle(await budget.reserve("alice", "1"), "1.5")
    late = await budget.reserve("alice", "1", ttl_seconds=1)
    clock.advance(2)
    await budget.check_availability("bob")  # purges the expired hold
    assert (await budget.settle(late, "0.5")).late
    await budget.settle(await budget.reserve("bob", "1"), "1")
    enforced = make_budget(enforce_balance=True, key_prefix=budget.config.key_prefix)
    assert (await enforced.get_usage("alice"))["user"].balance == Decimal("3")
    assert await budget.redis.exists(budget.keys.of("bob").balance("bob")) == 0


async def test_hold_stops_counting_when_its_ttl_passes(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    budget = make_budget(daily_user_limit="5")
    await budget.reserve("alice", "5", ttl_seconds=30)
    with pytest.raises(BudgetExceededError):
        await budget.check_availability("alice", None, "1")
    clock.advance(29.999)
    with pytest.raises(BudgetExceededError):
        await budget.check_availability("alice", None, "1")
    clock.advance(0.001)
    assert await budget.check_availability("alice", None, "5") is True
    usage = await budget.get_usage("alice")
    assert usage["user"].held == 0 and usage["global"].held == 0


async def test_many_expired_holds_are_all_purged(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    budget = make_budget(daily_global_limit="1000", expired_holds_purged_per_call=16)
    for i in range(40):
        await budget.reserve(f"user-{i}", "1", ttl_seconds=10)
    clock.advance(11)
    # 16 per call: the backlog drains over three calls, over-counting until then.
    for _ in range(3):
        await budget.check_availability("x")
    usage = await budget.get_usage("user-0")
    assert usage["global"].held == 0 and usage["user"].held == 0


async def test_a_hold_shorter_than_the_pending_ones_expires_on_time(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    budget = make_budget(daily_global_limit="10")
    await budget.reserve("long", "4", ttl_seconds=60)
    await budget.reserve("short", "4", ttl_seconds=5)
    with pytest.raises(BudgetExceededError):
        await budget.check_availability("x", None, "3")
    clock.advance(5)  # the short hold ends; the long one still counts
    assert await budget.check_availability("x", None, "6") is True
    with pytest.raises(BudgetExceededError):
        await budget.check_availability("x", None, "6.01")
    clock.advance(55)
    assert await budget.check_availability("x", None, "10") is True


async def test_holds_expire_on_time_after_the_earliest_has_ended(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    # The earliest hold is settled and another released before their
    # expiry: the ones still pending stop counting at their own expiry, not
    # earlier, not later.
    budget = make_budget(daily_global_limit="10")
    first = await budget.reserve("a", "3", ttl_seconds=10)
    second = await budget.reserve("b", "3", ttl_seconds=15)
    await budget.reserve("c", "3", ttl_seconds=20)
    await budget.settle(first, "1")
    await budget.release(second)
    clock.advance(19.999)
    with pytest.raises(BudgetExceededError):  # spent 1 + held 3
        await budget.check_availability("x", None, "6.01")
    clock.advance(0.001)
    assert await budget.check_availability("x", None, "9") is True
    usage = await budget.get_usage("c")
    assert usage["user"].held == 0 and usage["global"].held == 0


async def test_expired_holds_are_purged_even_when_the_due_time_was_lost(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    budget = make_budget(daily_user_limit="5")
    await budget.reserve("alice", "5", ttl_seconds=30)
    await budget.redis.delete(budget.keys.due)  # evicted, say
    with pytest.raises(BudgetExceededError):
        await budget.check_availability("alice", None, "1")
    await budget.redis.delete(budget.keys.due)
    clock.advance(30)
    assert await budget.check_availability("alice", None, "5") is True
    await budget.redis.delete(budget.keys.due)
    usage = await budget.get_usage("alice")
    assert usage["user"].held == 0


async def test_late_settle_is_recorded_and_marked(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    budget = make_budget(daily_user_limit="10")
    lease = await budget.reserve("alice", "2", ttl_seconds=60)
    clock.advance(61)
    await budget.check_availability("bob")  # purges the expired hold first
    record = await budget.settle(lease, "1.5")
    assert record.late and record.amount == Decimal("1.5")
    usage = await budget.get_usage("alice")
    assert usage["user"].daily.spent == Decimal("1.5") and usage["user"].held == 0

    # Expired but not yet purged: the hold is dropped exactly once.
    lease2 = await budget.reserve("alice", "3", ttl_seconds=60)
    clock.advance(61)
    record2 = await budget.settle(lease2, "1")
    assert record2.late
    usage = await budget.get_usage("alice")
    assert usage["user"].held == 0 and usage["user"].daily.spent == Decimal("2.5")


async def test_release_after_expiry_changes_nothing(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    budget = make_budget()
    lease = await budget.reserve("alice", "2", ttl_seconds=1)
    clock.advance(2)
    assert (await budget.get_usage("alice"))["user"].held == 0
    assert await budget.release(lease) is False
    with pytest.raises(LeaseStateError):
        await budget.settle(lease, "1")


async def test_reserve_idempotency(make_budget: MakeBudget) -> None:
    budget = make_budget(daily_user_limit="10")
    first = await budget.reserve("alice", "3", idempotency_key="r1")
    second = await budget.reserve("alice", "3", idempotency_key="r1")
    assert second.id == first.id and second.replayed and not first.replayed
    assert second.expires_at == first.expires_at
    assert (await budget.get_usage("alice"))["user"].held == Decimal("3")
    with pytest.raises(IdempotencyConflictError):
        await budget.reserve("alice", "4", idempotency_key="r1")


# -- balances --------------------------------------------------------------------


async def test_balance_admission_and_spending(make_budget: MakeBudget) -> None:
    budget = make_budget(enforce_balance=True)
    with pytest.raises(BudgetExceededError) as refused:
        await budget.check_availability("alice", None, "0.01")
    assert refused.value.window == "balance" and refused.value.resets_at is None
    with pytest.raises(BudgetExceededError):
        await budget.check_availability("alice")  # nothing left at all

    credit = await budget.add_credits("alice", "5")
    assert credit.balance == Decimal("5") and credit.kind == "grant"
    lease = await budget.reserve("alice", "3")
    with pytest.raises(BudgetExceededError) as refused:
        await budget.check_availability("alice", None, "2.01")
    assert refused.value.window == "balance"
    assert refused.value.limit == Decimal("5") and refused.value.held == Decimal("3")
    assert await budget.check_availability("alice", None, "2") is True

    await budget.settle(lease, "1")
    usage = await budget.get_usage("alice")
    assert usage["user"].balance == Decimal("4")
    await budget.record_spend("alice", "6")  # a fact: may go below zero
    usage = await budget.get_usage("alice")
    assert usage["user"].balance == Decimal("-2")
    with pytest.raises(BudgetExceededError):
        await budget.check_availability("alice")


async def test_min_balance_is_a_floor_or_a_credit_line(make_budget: MakeBudget) -> None:
    floor = make_budget(enforce_balance=True, min_balance="1")
    await floor.add_credits("alice", "3")
    assert await floor.check_availability("alice", None, "2") is True
    with pytest.raises(BudgetExceededError):
        await floor.check_availability("alice", None, "2.000001")

    credit_line = make_budget(enforce_balance=True, min_balance="-10")
    assert await credit_line.check_availability("bob", None, "10") is True
    with pytest.raises(BudgetExceededError):
        await credit_line.check_availability("bob", None, "10.01")


async def test_balance_is_shown_whether_enforced_or_not(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget()
    assert (await budget.get_usage("bob"))["user"].balance == 0  # none kept
    await budget.add_credits("alice", "5")
    await budget.record_spend("alice", "1")
    usage = await budget.get_usage("alice", "p")
    assert usage["user"].balance == Decimal("4")
    assert usage["project"].balance is None and usage["global"].balance is None
    # The credit account is kept exact, for when enforcement is switched on.
    enforced = make_budget(enforce_balance=True, key_prefix=budget.config.key_prefix)
    assert (await enforced.get_usage("alice"))["user"].balance == Decimal("4")


async def test_credit_idempotency(make_budget: MakeBudget) -> None:
    budget = make_budget(enforce_balance=True)
    first = await budget.add_credits("alice", "5", idempotency_key="topup-1")
    again = await budget.add_credits("alice", "5", idempotency_key="topup-1")
    assert again.replayed and again.entry_id == first.entry_id
    assert again.balance == Decimal("5")
    assert (await budget.get_usage("alice"))["user"].balance == Decimal("5")
    with pytest.raises(IdempotencyConflictError):
        await budget.add_credits("alice", "6", idempotency_key="topup-1")
    with pytest.raises(IdempotencyConflictError):
        await budget.add_credits("bob", "5", idempotency_key="topup-1")


async def test_zero_amounts_move_nothing_and_break_nothing(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    # Regression: a zero hold or charge used to reach HINCRBY as "-0".
    budget = make_budget(enforce_balance=True, min_balance="-1")
    await budget.add_credits("alice", "0")
    lease = await budget.reserve("alice", "0", ttl_seconds=1)
    await budget.record_spend("alice", "0")
    zero_lease = await budget.reserve("alice", "0")
    await budget.settle(zero_lease, "0")
    clock.advance(2)  # the first zero hold expires and is purged
    assert await budget.check_availability("alice", None, "0.5") is True
    usage = await budget.get_usage("alice")
    assert usage["user"].held == 0 and usage["user"].balance == 0
    assert usage["user"].daily.spent == 0
    assert await budget.release(lease) is False


async def test_a_settle_at_exactly_the_expiry_is_late(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    budget = make_budget()
    on_time = await budget.reserve("alice", "2", ttl_seconds=60)
    at_expiry = await budget.reserve("alice", "2", ttl_seconds=60)
    clock.advance(59.999)
    assert not (await budget.settle(on_time, "1")).late
    clock.advance(0.001)  # exactly expires_at: the hold no longer counts
    assert clock() == at_expiry.expires_at
    assert (await budget.settle(at_expiry, "1")).late


@pytest.mark.parametrize("end", ["settle", "release", "expire"])
async def test_finished_hold_records_expire_after_the_idempotency_ttl(
    make_budget: MakeBudget, clock: FakeClock, end: str
) -> None:
    """A finished lease's record is kept as long as an idempotency key, then
    goes: without its TTL, every lease ever granted would stay in Redis."""
    budget = make_budget(idempotency_ttl_seconds=3600)
    lease = await budget.reserve("alice", "2", ttl_seconds=60)
    hold = budget.keys.of_id(lease.id).hold(lease.id)
    assert await budget.redis.pttl(hold) == -1  # pending: kept until it ends
    if end == "settle":
        await budget.settle(lease, "1")
    elif end == "release":
        await budget.release(lease)
    else:
        clock.advance(61)
        await budget.check_availability("bob")  # purges the expired hold
        assert await budget.redis.hget(hold, "st") == b"x"
    ttl_ms = await budget.redis.pttl(hold)
    assert 3_500_000 < ttl_ms <= 3_600_000
