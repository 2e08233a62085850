"""A ``settle`` or an ``extend`` given only a lease id is one round trip when
this manager took the hold, and still right when it did not.

On both backends, balances enforced, a user on a plan (an allowance of 100)
with a balance of 50: what the manager sends is counted as
tests/test_core_roundtrips.py counts it (every command through the
client), after the plans have been read. After a ``reserve`` (or
``reserve_up_to``) in the same manager, ``extend`` and ``settle`` by id
each send exactly one EVALSHA, also through the HTTP routes; a release by
id forgets the hold. A manager that did not take the hold sends each call
twice (the script names the hold's user) and charges the same; after one
extend it knows the hold. The map is bounded (filled beyond its bound, the
oldest holds go and are settled right in two); an entry goes with its
hold's expiry; a plan changed or taken away between the reserve and the
settle is corrected by the script (two scripts, the new plan's allowance).
A deployment without plans keeps no map at all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from conftest import FakeClock, MakeBudget
from spendgate import BudgetManager
from spendgate.ops import pricebooks
from spendgate.plans.holders import HoldUsers
from spendgate.server import create_app

KEY = "test-key-1"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(autouse=True)
def _books_stay_fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    # The active book and the plans are read again every second: on a loaded
    # machine that read could fall between two calls and be counted.
    monkeypatch.setattr(pricebooks, "REFRESH_SECONDS", 3600.0)


def _record_commands(client: aioredis.Redis) -> list[str]:
    """The name of every command sent through ``client`` from now on."""
    sent: list[str] = []
    original = client.execute_command

    async def recording(*args: Any, **options: Any) -> Any:
        sent.append(str(args[0]).upper())
        return await original(*args, **options)

    client.execute_command = recording  # type: ignore[method-assign]
    return sent


def _count_scripts(budget: BudgetManager) -> list[str]:
    """The operations ``budget`` sends from now on, in order."""
    sent: list[str] = []
    run = budget._store.run

    async def counted(operation: str, *args: Any, **kwargs: Any) -> Any:
        sent.append(operation)
        return await run(operation, *args, **kwargs)

    budget._store.run = counted  # type: ignore[method-assign]
    return sent


async def _warm(budget: BudgetManager) -> None:
    """Load the lease scripts (a first call's NOSCRIPT and SCRIPT LOAD are
    not what is counted), with a user who has no plan."""
    await budget.add_credits("warm", 10)
    for end in ("settle", "release"):
        lease = await budget.reserve("warm", "1")
        await budget.extend(lease, "1")
        if end == "settle":
            await budget.settle(lease, "1")
        else:
            await budget.release(lease)


async def _planned(make_budget: MakeBudget) -> BudgetManager:
    """A manager, balances enforced, that knows ada is on "pro" (an
    allowance of 100; "basic" gives 10) and has 50 of balance; warm."""
    budget = make_budget(enforce_balance=True)
    await _warm(budget)
    await budget.set_plan("pro", free_allowance=100, period="monthly")
    await budget.set_plan("basic", free_allowance=10, period="monthly")
    await budget.add_credits("ada", 50)
    await budget.assign_plan("ada", "pro")
    await budget.get_user_plan("ada")  # (the plans are read: not counted below)
    return budget


async def test_extend_and_settle_by_id_after_a_reserve_are_one_evalsha(
    make_budget: MakeBudget,
) -> None:
    budget = await _planned(make_budget)
    lease = await budget.reserve("ada", "30")
    sent = _record_commands(budget.redis)
    extended = await budget.extend(lease.id, "90")  # 120 of allowance + balance
    assert sent == ["EVALSHA"]
    assert extended.amount == Decimal(120)
    assert extended.user_id == "ada"
    sent.clear()
    record = await budget.settle(lease.id, "110")
    assert sent == ["EVALSHA"]
    assert record.allowance_used == Decimal(100)
    assert (await budget.get_balance("ada")).total == Decimal(40)
    # the hold has ended: its entry went with it
    assert budget._hold_users is not None and len(budget._hold_users) == 0
    # reserve_up_to's hold too, and a release by id forgets its hold
    upto = await budget.reserve_up_to("ada", "20", "1")
    held = await budget.reserve("ada", "5")
    sent.clear()
    assert (await budget.settle(upto.id, "20")).allowance_used == 0
    assert await budget.release(held.id) is True
    assert sent == ["EVALSHA", "EVALSHA"]
    assert len(budget._hold_users) == 0
    assert (await budget.get_balance("ada")).total == Decimal(20)


async def test_by_id_from_another_manager_takes_two_and_charges_the_same(
    make_budget: MakeBudget,
) -> None:
    first = await _planned(make_budget)
    lease = await first.reserve("ada", "30")
    other = make_budget(enforce_balance=True)
    await other.get_user_plan("ada")  # it knows ada's plan, not the hold's user
    sent = _count_scripts(other)
    assert (await other.extend(lease.id, "20")).amount == Decimal(50)
    assert sent == ["extend", "extend"]
    # the answer named the hold's user: from now on, one script
    sent.clear()
    assert (await other.extend(lease.id, "10")).amount == Decimal(60)
    assert sent == ["extend"]
    # a settle by id from a manager that never saw the hold: two scripts
    third = make_budget(enforce_balance=True)
    await third.get_user_plan("ada")
    sent = _count_scripts(third)
    record = await third.settle(lease.id, "60")
    assert sent == ["settle", "settle"]
    assert record.allowance_used == Decimal(60)
    plan = await first.get_user_plan("ada")
    assert plan is not None and plan.allowance_remaining == Decimal(40)
    assert (await first.get_balance("ada")).total == Decimal(50)


async def test_the_map_is_bounded_and_the_oldest_holds_still_settle_right(
    make_budget: MakeBudget,
) -> None:
    budget = await _planned(make_budget)
    budget._hold_users = HoldUsers(limit=3)
    leases = [await budget.reserve("ada", "10") for _ in range(5)]
    assert len(budget._hold_users) == 3
    sent = _count_scripts(budget)
    for lease in leases[2:]:  # remembered: one script each
        assert (await budget.settle(lease.id, "10")).allowance_used == 10
    assert sent == ["settle"] * 3
    sent.clear()
    for lease in leases[:2]:  # dropped: the script names the user
        assert (await budget.settle(lease.id, "10")).allowance_used == 10
    assert sent == ["settle"] * 4
    plan = await budget.get_user_plan("ada")
    assert plan is not None and plan.allowance_used == Decimal(50)
    assert (await budget.get_balance("ada")).total == Decimal(50)


async def test_an_entry_goes_with_its_holds_expiry(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    budget = await _planned(make_budget)
    lease = await budget.reserve("ada", "10", ttl_seconds=10)
    clock.advance(10)
    sent = _count_scripts(budget)
    record = await budget.settle(lease.id, "10")
    assert sent == ["settle", "settle"]
    assert record.late is True
    assert record.allowance_used == Decimal(10)
    assert budget._hold_users is not None and len(budget._hold_users) == 0
    # an expired entry at the head of the map goes when another is added
    budget._hold_users.remember("a" * 32, "ada", budget._now_ms() + 5, 0)
    clock.advance(1)
    await budget.reserve("ada", "1")
    assert budget._hold_users.user("a" * 32, 0) == ""


@pytest.mark.parametrize("change", ["basic", None])
async def test_a_plan_changed_after_the_reserve_is_corrected_on_settle(
    make_budget: MakeBudget, change: str | None
) -> None:
    budget = await _planned(make_budget)
    lease = await budget.reserve("ada", "30")
    other = make_budget(enforce_balance=True)
    if change is None:
        await other.unassign_plan("ada")
    else:
        await other.assign_plan("ada", change)
    sent = _count_scripts(budget)
    record = await budget.settle(lease.id, "30")
    assert sent == ["settle", "settle"]
    # basic's allowance of 10 then the balance; no plan: the balance alone
    drawn = Decimal(10) if change else Decimal(0)
    assert record.allowance_used == drawn
    assert (await budget.get_balance("ada")).total == Decimal(50) - 30 + drawn


async def test_without_plans_no_map_is_kept(make_budget: MakeBudget) -> None:
    budget = make_budget(enforce_balance=True)
    await _warm(budget)
    await budget.add_credits("bob", 10)
    lease = await budget.reserve("bob", "4")
    sent = _record_commands(budget.redis)
    await budget.extend(lease.id, "1")
    await budget.settle(lease.id, "3")
    assert sent == ["EVALSHA", "EVALSHA"]
    assert budget._hold_users is None
    assert (await budget.get_balance("bob")).total == Decimal(7)


@pytest.fixture
async def client(
    make_budget: MakeBudget, clock: FakeClock
) -> AsyncIterator[tuple[httpx.AsyncClient, BudgetManager]]:
    budget = await _planned(make_budget)
    app = create_app(budget, api_keys=[KEY], clock=clock)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://spendgate.test"
    ) as http:
        yield http, budget


async def test_the_http_routes_extend_and_settle_in_one_evalsha(
    client: tuple[httpx.AsyncClient, BudgetManager],
) -> None:
    http, budget = client
    reserved = await http.post(
        "/v1/reserve", json={"user_id": "ada", "amount": "30"}, headers=AUTH
    )
    assert reserved.status_code == 200
    lease_id = reserved.json()["lease_id"]
    sent = _record_commands(budget.redis)
    extended = await http.post(
        "/v1/extend", json={"lease_id": lease_id, "more": "80"}, headers=AUTH
    )
    assert extended.status_code == 200
    assert extended.json()["amount"] == "110"
    assert sent == ["EVALSHA"]
    sent.clear()
    settled = await http.post(
        "/v1/settle", json={"lease_id": lease_id, "actual_cost": "105"}, headers=AUTH
    )
    assert settled.status_code == 200
    assert settled.json()["allowance_used"] == "100"
    assert sent == ["EVALSHA"]
