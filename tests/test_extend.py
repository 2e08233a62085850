"""``extend``: top a live hold up, under the admission rule of ``reserve``.

Both backends (the ``make_budget`` fixture), the clock injected. Checked: an
extension counts in every scope and settle charges the actual cost of the
extended lease; it is admitted exactly like a reserve of the same amount
(caps with held amounts, the balance), and a refusal leaves every key as it
was; a settled, released, expired or unknown lease is refused with the
errors settle uses; the expiry only ever moves later; an idempotency key
tops up once; 200 concurrent extends of different leases against one cap
use it exactly and never pass it; and the HTTP route.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from conftest import FakeClock, MakeBudget, deployment_state
from spendgate import (
    BudgetExceededError,
    BudgetManager,
    IdempotencyConflictError,
    LeaseStateError,
)
from spendgate.models import Lease


async def _held(budget: BudgetManager, user: str, project: str | None = None) -> Any:
    usage = await budget.get_usage(user, project)
    return {scope: usage[scope].held for scope in usage}


async def test_an_extension_counts_everywhere_and_settle_charges_the_actual(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(daily_user_limit="10")
    lease = await budget.reserve("ada", "3", project_id="p")
    extended = await budget.extend(lease, "4")
    # the Lease given is updated in place and returned
    assert extended is lease and lease.amount == Decimal(7)
    assert not lease.replayed
    held = await _held(budget, "ada", "p")
    assert held == {"user": 7, "project": 7, "global": 7}
    # settle charges the actual cost (below the extended hold), the whole
    # hold stops counting, and the ledger's estimate is the extended amount
    record = await budget.settle(lease, "5.5")
    assert record.amount == Decimal("5.5") and record.estimate == Decimal(7)
    usage = await budget.get_usage("ada", "p")
    assert usage["user"].held == 0 and usage["project"].held == 0
    assert usage["user"].daily.spent == Decimal("5.5")


async def test_settle_above_the_extended_hold_is_still_a_fact(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(daily_user_limit="10")
    lease = await budget.reserve("ada", "1")
    await budget.extend(lease, "1")
    record = await budget.settle(lease, "3")  # Part 1's rule: never refused
    assert record.amount == Decimal(3) and record.estimate == Decimal(2)
    assert (await budget.get_usage("ada"))["user"].daily.spent == Decimal(3)


async def test_by_id_it_returns_the_lease_with_its_owner(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget()
    lease = await budget.reserve("ada", "1", project_id="p")
    got = await budget.extend(lease.id, "0.25")
    assert isinstance(got, Lease) and got is not lease
    assert (got.id, got.user_id, got.project_id) == (lease.id, "ada", "p")
    assert got.amount == Decimal("1.25") and got.expires_ms == lease.expires_ms
    alone = await budget.reserve("bob", "1")
    assert (await budget.extend(alone.id, "1")).project_id is None


async def test_it_is_admitted_like_a_reserve_of_the_same_amount(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(daily_user_limit="10")
    await budget.record_spend("ada", "2")
    lease = await budget.reserve("ada", "3")
    await budget.extend(lease, "5")  # 2 spent + 8 held: exactly the cap
    with pytest.raises(BudgetExceededError) as refused:
        await budget.extend(lease, "0.000001")
    error = refused.value
    assert (error.scope, error.scope_id, error.window) == ("user", "ada", "daily")
    assert (error.limit, error.spent, error.held) == (10, 2, 8)
    assert error.requested == Decimal("0.000001")
    assert lease.amount == Decimal(8)  # a refusal leaves the Lease as it was
    # a project's monthly cap names the project
    budget = make_budget(monthly_project_limit="20")
    other = await budget.reserve("bob", "15", project_id="p")
    with pytest.raises(BudgetExceededError) as by_project:
        await budget.extend(other, "6")
    assert (by_project.value.scope, by_project.value.window) == ("project", "monthly")
    assert by_project.value.scope_id == "p"
    await budget.extend(other, "5")


async def test_the_balance_bounds_it_where_enforced(make_budget: MakeBudget) -> None:
    budget = make_budget(enforce_balance=True)
    await budget.add_credits("ada", "4")
    lease = await budget.reserve("ada", "3")
    with pytest.raises(BudgetExceededError) as refused:
        await budget.extend(lease, "1.5")
    assert refused.value.window == "balance"
    await budget.extend(lease, "1")
    assert (await budget.get_usage("ada"))["user"].held == Decimal(4)


async def test_a_refused_extend_changes_no_key(make_budget: MakeBudget) -> None:
    budget = make_budget(daily_user_limit="10", daily_global_limit="12")
    await budget.record_spend("ada", "1", project_id="p")
    lease = await budget.reserve("ada", "4", project_id="p", ttl_seconds=60)
    await budget.reserve("bob", "5")
    before = await deployment_state(budget)
    for more, key in (("3", None), ("6", "retry-1")):  # the global cap, the user's
        with pytest.raises(BudgetExceededError):
            await budget.extend(lease, more, ttl_seconds=600, idempotency_key=key)
    assert await deployment_state(budget) == before
    assert lease.amount == Decimal(4)


async def test_a_lease_that_is_not_live_is_refused_as_settle_refuses(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    budget = make_budget(daily_user_limit="10")
    settled = await budget.reserve("ada", "1")
    await budget.settle(settled, "1")
    released = await budget.reserve("ada", "1")
    await budget.release(released)
    expired = await budget.reserve("ada", "1", ttl_seconds=30)
    purged = await budget.reserve("ada", "1", ttl_seconds=30)
    clock.advance(30)  # both expire now; `purged` is then purged by a reserve
    before = await deployment_state(budget)
    with pytest.raises(LeaseStateError) as by_expiry:
        await budget.extend(expired, "1")
    assert await deployment_state(budget) == before  # not even the purge it is due
    await budget.reserve("bob", "1")
    cases = [
        (settled, "settled"),
        (released, "released"),
        (expired, "expired"),
        (purged, "expired"),
        ("0" * 28, "unknown (never granted, or forgotten)"),
    ]
    for lease, state in cases:
        with pytest.raises(LeaseStateError) as refused:
            await budget.extend(lease, "1")
        assert (refused.value.state, refused.value.action) == (state, "extend")
    assert by_expiry.value.state == "expired"
    # the expired holds stopped counting; only bob's is held
    assert (await budget.get_usage("bob"))["global"].held == Decimal(1)
    # an expired lease is still settled (a fact, marked late), as before
    assert (await budget.settle(expired, "0.5")).late


async def test_the_expiry_only_moves_later(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    budget = make_budget(daily_user_limit="10")
    lease = await budget.reserve("ada", "1", ttl_seconds=60)
    first_expiry = lease.expires_ms
    await budget.extend(lease, "1", ttl_seconds=300)
    assert lease.expires_ms == first_expiry + 240_000
    await budget.extend(lease, 0, ttl_seconds=10)  # earlier: kept as it was
    assert lease.expires_ms == first_expiry + 240_000 and lease.amount == 2
    clock.advance(120)  # past the first expiry: still held, still live
    await budget.reserve("bob", "1")  # (an admission, which purges)
    assert (await budget.get_usage("ada"))["user"].held == Decimal(2)
    await budget.extend(lease, "1")
    assert not (await budget.settle(lease, "2")).late


async def test_an_extend_of_nothing_is_admitted_at_the_cap(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(daily_user_limit="10")
    lease = await budget.reserve("ada", "10")
    assert (await budget.extend(lease, 0)).amount == Decimal(10)


async def test_a_retried_extend_with_a_key_tops_up_once(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(daily_user_limit="10")
    lease = await budget.reserve("ada", "1")
    first = await budget.extend(lease.id, "2", idempotency_key="chunk-1")
    again = await budget.extend(lease.id, "2", idempotency_key="chunk-1")
    assert (first.amount, first.replayed) == (Decimal(3), False)
    assert (again.amount, again.replayed) == (Decimal(3), True)
    assert again.user_id == "ada"
    assert (await budget.get_usage("ada"))["user"].held == Decimal(3)
    with pytest.raises(IdempotencyConflictError):
        await budget.extend(lease.id, "5", idempotency_key="chunk-1")
    # without a key, each call tops up
    await budget.extend(lease, "1")
    await budget.extend(lease, "1")
    assert lease.amount == Decimal(5)


async def test_concurrent_extends_of_different_leases_use_the_cap_exactly(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(daily_global_limit="10")
    leases = [await budget.reserve(f"user-{i}", "0.01") for i in range(200)]
    results = await asyncio.gather(
        *(budget.extend(lease, "0.1") for lease in leases), return_exceptions=True
    )
    admitted = [r for r in results if isinstance(r, Lease)]
    refused = [r for r in results if isinstance(r, BudgetExceededError)]
    assert len(admitted) + len(refused) == 200
    assert len(admitted) == 80  # (10 - 200 * 0.01) / 0.1: the room, exactly
    usage = await budget.get_usage("user-0")
    assert usage["global"].held == Decimal(10)  # the cap, never above it
    assert sum(lease.amount for lease in leases) == Decimal(10)


async def test_over_http(make_budget: MakeBudget) -> None:
    import httpx

    from spendgate.server import create_app

    budget = make_budget(daily_user_limit="10")
    lease = await budget.reserve("ada", "2")
    app = create_app(budget, api_keys=["k"])
    auth = {"Authorization": "Bearer k"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

        async def extend(**body: Any) -> httpx.Response:
            return await client.post("/v1/extend", json=body, headers=auth)

        grown = await extend(lease_id=lease.id, more="3", idempotency_key="a")
        assert grown.status_code == 200, grown.text
        assert grown.json()["amount"] == "5" and grown.json()["user_id"] == "ada"
        replay = await extend(lease_id=lease.id, more="3", idempotency_key="a")
        assert replay.json()["replayed"] is True and replay.json()["amount"] == "5"
        refused = await extend(lease_id=lease.id, more="6")
        assert refused.status_code == 429 and refused.json()["window"] == "daily"
        assert "retry-after" in refused.headers
        assert (await extend(lease_id=lease.id, more="-1")).status_code == 422
        await budget.settle(lease.id, "4")
        settled = await extend(lease_id=lease.id, more="1")
        assert settled.status_code == 409 and "settled" in settled.json()["detail"]
