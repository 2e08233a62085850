"""``extend`` of a team lease: a stream charged to a team's pool grows its
hold (``lua/team_extend.lua``), and gives it all back.

How: on both backends, a team lease is extended and every place a team hold
is kept is read raw after each step: the hold's record, the pool's balance
and held amount (``tpool:``), the member's held amount (``theld:``), the
hold's entry among the team's holds (``tholds:``, its encoded amount and
expiry score) and the user's, project's and global held amounts (``r:``),
with ``model_caps`` the model's (``mr:``).
A later settle, release or expiry must give back exactly the whole hold; a
later expiry moves the team's entry too; a zero hold grows into the team's
count; an idempotency key tops a hold up once; 100 concurrent extends
against a member's cap admit exactly up to it; a ``LeaseMeter`` streams on
a team lease up to the pool; a lease of the user's own extends as before;
without ``model_caps`` the script links none of the model's helpers. The
refusals are in tests/test_teams_extend_refusals.py.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from conftest import FakeClock, MakeBudget
from spendgate import (
    BudgetExceededError,
    BudgetManager,
    IdempotencyConflictError,
    Lease,
    LeaseStateError,
)
from spendgate.core.protocol import FIELD
from spendgate.core.scripts import SCRIPT_CONSTANTS, configured_source
from teams_extend_helpers import GPT, _freed, _kept, _team
from test_teams import _entries


def _entry(amount: int, lease: Lease) -> str:
    """A team hold's entry among the team's holds (lua/_teams.lua)."""
    return f"{amount}|{len(lease.id)}|{lease.id}ada"


async def test_an_extension_grows_the_hold_everywhere_and_settle_frees_it_all(
    budget: BudgetManager,
) -> None:
    await _team(budget, balance=50, daily_cap=20)
    lease = await budget.reserve("ada", 3, "p1", team_id="eng", ttl_seconds=60)
    extended = await budget.extend(lease, 4)
    assert extended is lease and lease.amount == 7 and not lease.replayed
    kept = await _kept(budget)
    assert kept == {
        "pool": 50_000_000,
        "pool_held": 7_000_000,
        "member_held": b"7000000",
        "entries": [(_entry(7_000_000, lease), lease.expires_ms)],
        "user": 7_000_000,
        "project": 7_000_000,
        "global": 7_000_000,
    }
    record = await budget.settle(lease, "5.5")
    assert record.estimate == 7 and record.amount == Decimal("5.5")
    assert record.team_id == "eng"
    kept = await _kept(budget)
    assert kept == _freed(44_500_000)
    team = await budget.get_team("eng")
    assert team.members["ada"].spent_today == Decimal("5.5")
    usage = await budget.get_usage("ada", "p1")
    assert usage["user"].daily.spent == Decimal("5.5") and usage["user"].held == 0
    entry = (await _entries(budget))[-1]
    assert (entry[FIELD["team_id"]], entry[FIELD["estimate"]]) == ("eng", "7000000")


async def test_an_extension_by_id_answers_the_team_lease(
    budget: BudgetManager,
) -> None:
    await _team(budget)
    lease = await budget.reserve("ada", 1, team_id="eng")
    by_id = await budget.extend(lease.id, "2.5")
    assert (by_id.id, by_id.user_id, by_id.project_id) == (lease.id, "ada", None)
    assert (by_id.amount, by_id.team_id, by_id.replayed) == (
        Decimal("3.5"),
        "eng",
        False,
    )
    assert by_id.expires_ms == lease.expires_ms
    assert (await budget.get_team("eng")).held == Decimal("3.5")
    assert await budget.release(lease.id) is True
    assert (await _kept(budget))["pool_held"] == 0


async def test_release_and_expiry_after_extensions_give_back_the_whole_hold(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    budget = make_budget(model_caps=True)
    await _team(budget, daily_cap=30)
    released = await budget.reserve("ada", 1, "p1", team_id="eng", model=GPT)
    expiring = await budget.reserve(
        "ada", 2, "p1", team_id="eng", model=GPT, ttl_seconds=10
    )
    for _ in range(3):
        await budget.extend(released, 1)
        await budget.extend(expiring, 2)
    kept = await _kept(budget)
    assert (kept["pool_held"], kept["member_held"], kept["user"]) == (
        12_000_000,
        b"12000000",
        12_000_000,
    )
    assert sorted(kept["entries"]) == sorted(
        [
            (_entry(4_000_000, released), released.expires_ms),
            (_entry(8_000_000, expiring), expiring.expires_ms),
        ]
    )
    assert await budget.release(released) is True
    kept = await _kept(budget)
    assert (kept["pool_held"], kept["user"], kept["project"]) == (
        8_000_000,
        8_000_000,
        8_000_000,
    )
    clock.advance(11)  # the team's purge and the global purge let it go
    team = await budget.get_team("eng")
    assert (team.held, team.members["ada"].held, team.balance) == (0, 0, 100)
    usage = await budget.get_usage("ada", "p1", model=GPT)  # (a global purge)
    assert usage["user"].held == usage["project"].held == 0
    assert await _kept(budget) == _freed(100_000_000)
    assert await budget.redis.get(budget.keys.model_held("user", "ada", GPT)) is None
    with pytest.raises(LeaseStateError, match="expired"):
        await budget.extend(expiring, 1)


async def test_a_later_expiry_moves_the_teams_entry_too(
    budget: BudgetManager, clock: FakeClock
) -> None:
    await _team(budget)
    lease = await budget.reserve("ada", 2, team_id="eng", ttl_seconds=10)
    first = lease.expires_ms
    await budget.extend(lease, 0, ttl_seconds=60)  # only the expiry moves
    assert lease.amount == 2 and lease.expires_ms == first + 50_000
    assert (await _kept(budget))["entries"] == [
        (_entry(2_000_000, lease), first + 50_000)
    ]
    await budget.extend(lease, 1, ttl_seconds=5)  # never earlier
    assert lease.expires_ms == first + 50_000
    assert (await _kept(budget))["entries"] == [
        (_entry(3_000_000, lease), first + 50_000)
    ]
    clock.advance(30)  # past the first expiry: it still counts
    assert (await budget.get_team("eng")).held == 3
    await budget.extend(lease, 1)
    clock.advance(31)  # past the new one: the whole hold goes
    assert (await budget.get_team("eng")).held == 0
    assert (await _kept(budget))["pool_held"] == 0


async def test_a_zero_team_hold_grows_into_the_teams_count(
    budget: BudgetManager,
) -> None:
    await _team(budget, balance=5)
    lease = await budget.reserve("ada", 0, team_id="eng")
    assert (await _kept(budget))["entries"] == []
    await budget.extend(lease, 0, ttl_seconds=3600)  # nothing to move for the team
    await budget.extend(lease, 2)
    kept = await _kept(budget)
    assert kept["entries"] == [(_entry(2_000_000, lease), lease.expires_ms)]
    assert kept["pool_held"] == 2_000_000
    await budget.settle(lease, 1)
    kept = await _kept(budget)
    assert (kept["pool"], kept["pool_held"], kept["entries"]) == (4_000_000, 0, [])


async def test_an_idempotency_key_tops_a_team_hold_up_once(
    budget: BudgetManager,
) -> None:
    await _team(budget)
    lease = await budget.reserve("ada", 1, team_id="eng")
    await budget.extend(lease, 2, idempotency_key="chunk-1")
    again = await budget.extend(lease.id, 2, idempotency_key="chunk-1")
    assert again.replayed and again.amount == 3 and again.user_id == "ada"
    with pytest.raises(IdempotencyConflictError):
        await budget.extend(lease, 5, idempotency_key="chunk-1")
    kept = await _kept(budget)
    assert (kept["pool_held"], kept["user"]) == (3_000_000, 3_000_000)
    await budget.settle(lease, 3)
    # a replay after the settle answers the first call, and moves nothing
    assert (await budget.extend(lease, 2, idempotency_key="chunk-1")).replayed
    assert (await _kept(budget))["pool_held"] == 0


async def test_100_concurrent_extensions_stop_at_the_members_cap(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(daily_user_limit=80)
    await _team(budget, balance=100, daily_cap=30)
    leases = [await budget.reserve("ada", "0.5", team_id="eng") for _ in range(10)]

    async def grow(lease: Lease) -> Lease | BudgetExceededError:
        try:
            return await budget.extend(lease.id, "0.5")
        except BudgetExceededError as exc:
            return exc

    results = await asyncio.gather(*(grow(leases[i % 10]) for i in range(100)))
    grown = [r for r in results if isinstance(r, Lease)]
    scopes = {r.scope for r in results if isinstance(r, BudgetExceededError)}
    # 5 held by the reserves, 25 more fit under the member's cap of 30
    assert len(grown) == 50 and scopes == {"team_member"}
    team = await budget.get_team("eng")
    assert (team.held, team.members["ada"].held) == (30, 30)
    kept = await _kept(budget)
    amounts = {e.split("|")[2][:-3]: int(e.split("|")[0]) for e, _ in kept["entries"]}
    assert sum(amounts.values()) == 30_000_000 and len(amounts) == 10
    assert kept["user"] == kept["global"] == 30_000_000
    await asyncio.gather(*(budget.settle(lease.id, "0.5") for lease in leases))
    kept = await _kept(budget)
    assert (kept["pool"], kept["pool_held"], kept["entries"]) == (95_000_000, 0, [])
    assert (kept["member_held"], kept["user"], kept["global"]) == (None, None, None)


async def test_a_lease_of_the_users_own_is_extended_as_before(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(daily_user_limit=10)
    await _team(budget)
    own = await budget.reserve("ada", 3)
    team_lease = await budget.reserve("ada", 3, team_id="eng")
    await budget.extend(own, 2)
    assert own.team_id is None and own.amount == 5
    with pytest.raises(BudgetExceededError) as refused:
        await budget.extend(own.id, 3)  # the team hold counts in the user's cap
    assert (refused.value.scope, refused.value.held) == ("user", 8)
    assert (await budget.get_team("eng")).held == 3
    await budget.settle(own, 5)
    assert (await budget.get_team("eng")).balance == 100
    await budget.extend(team_lease, 2)
    assert (await budget.get_usage("ada"))["user"].held == 5


def test_without_model_caps_team_extend_carries_nothing_of_them() -> None:
    constants = {name: "0" for name in SCRIPT_CONSTANTS}
    constants.update(BASE="sg:{sg}:", LOW_BALANCE="-1")
    off = configured_source("team_extend", {**constants, "MODEL_CAPS": "0"})
    on = configured_source("team_extend", {**constants, "MODEL_CAPS": "1"})
    for helper in (b"model_admit", b"model_add_held"):
        assert helper not in off and helper in on


async def test_a_lease_meter_streams_on_a_team_lease_up_to_the_pool(
    budget: BudgetManager,
) -> None:
    from spendgate.integrations.streaming import LeaseMeter

    await _team(budget, balance=10)
    async with budget.lease("ada", 2, team_id="eng") as lease:
        meter = LeaseMeter(budget, lease, step=3)
        await meter.reach(4)  # one step: the hold is 5
        assert (lease.amount, meter.extensions) == (5, 1)
        await meter.reach(9)  # a full step does not fit: exactly what is missing
        assert (lease.amount, meter.extensions) == (9, 2)
        with pytest.raises(BudgetExceededError) as refused:
            await meter.reach(11)
        assert refused.value.scope == "team" and lease.amount == 9
    team = await budget.get_team("eng")  # settled at what was used
    assert (team.balance, team.held, team.members["ada"].spent_today) == (1, 0, 9)
