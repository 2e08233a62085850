"""``extend`` of a team lease: a stream charged to a team's pool grows its
hold (``lua/team_extend.lua``).

How: on both backends, a team lease is extended and every place a team hold
is kept is read raw after each step: the hold's record, the pool's balance
and held amount (``tpool:``), the member's held amount (``theld:``), the
hold's entry among the team's holds (``tholds:``, its encoded amount and
expiry score) and the user's, project's and global held amounts (``r:``),
with ``model_caps`` the model's (``mr:``). A later settle, release or expiry
must give back exactly the whole hold. Each refusal (the member's cap, the
pool, the user's own cap, a model's cap, a removed member, a finished
lease) is checked to change no key at all; 100 concurrent extends against a
member's cap admit exactly up to it; a ``LeaseMeter`` streams on a team
lease up to the pool; a lease of the user's own extends as before.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from conftest import FakeClock, MakeBudget
from spendgate import (
    BudgetExceededError,
    BudgetManager,
    IdempotencyConflictError,
    Lease,
    LeaseStateError,
    NotATeamMemberError,
)
from spendgate.core.protocol import FIELD
from spendgate.core.scripts import SCRIPT_CONSTANTS, configured_source
from test_teams import _entries, _snapshot

GPT = "gpt-4o"


async def _team(budget: BudgetManager, balance: Any = 100, **caps: Any) -> None:
    await budget.create_team("eng", initial_balance=balance)
    await budget.add_team_member("eng", "ada", **caps)


async def _kept(budget: BudgetManager, project: str = "p1") -> dict[str, Any]:
    """Where the team's holds are kept, raw (micro-units; None: no key or
    field): the pool's balance and held amount, the member's held amount,
    the team's pending hold entries with their scores, and the held amounts
    of the user, the project and global."""
    redis, keys = budget.redis, budget.keys
    team, _, member_held, holds, _, _ = keys.team_keys("eng", "", "")
    balance, held = await redis.hmget(team, "b", "h")
    entries = await redis.zrange(holds, 0, -1, withscores=True)

    async def number(key: str) -> int | None:
        value = await redis.get(key)
        return None if value is None else int(value)

    return {
        "pool": int(balance),
        "pool_held": int(held or 0),
        "member_held": await redis.hget(member_held, "ada"),
        "entries": [(e.decode(), int(score)) for e, score in entries],
        "user": await number(keys.held("user", "ada")),
        "project": await number(keys.held("project", project)),
        "global": await number(keys.held("global", "")),
    }


def _freed(pool: int) -> dict[str, Any]:
    """What :func:`_kept` reads once no hold is pending: the pool's balance
    alone, no held amount anywhere (every key or field gone at zero)."""
    return {
        "pool": pool,
        "pool_held": 0,
        "member_held": None,
        "entries": [],
        "user": None,
        "project": None,
        "global": None,
    }


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


@pytest.mark.parametrize(
    ("limit", "scope", "window"),
    [
        ("member", "team_member", "daily"),
        ("pool", "team", "balance"),
        ("user", "user", "daily"),
        ("project", "project", "daily"),
    ],
)
async def test_a_refused_extension_changes_nothing(
    budget: BudgetManager, limit: str, scope: str, window: str
) -> None:
    # each test one binding limit at 10, the others well above
    await _team(
        budget,
        balance=10 if limit == "pool" else 100,
        daily_cap=10 if limit == "member" else 50,
    )
    if limit in ("user", "project"):
        await budget.set_limits(limit, "ada" if limit == "user" else "p1", daily=10)
    lease = await budget.reserve("ada", 6, "p1", team_id="eng")
    before = await _snapshot(budget)
    with pytest.raises(BudgetExceededError) as refused:
        await budget.extend(lease, 5)
    error = refused.value
    assert (error.scope, error.window, error.limit) == (scope, window, 10)
    assert (error.held, error.requested) == (6, 5)
    assert await _snapshot(budget) == before
    assert lease.amount == 6  # the Lease given is left as it was
    # what fits is admitted: up to the limit exactly
    await budget.extend(lease, 4)
    assert (await budget.get_team("eng")).held == 10


async def test_the_pool_refusal_counts_other_members_holds(
    budget: BudgetManager,
) -> None:
    await _team(budget, balance=10)
    await budget.add_team_member("eng", "bob")
    lease = await budget.reserve("ada", 2, team_id="eng")
    await budget.reserve("bob", 7, team_id="eng")
    with pytest.raises(BudgetExceededError) as refused:
        await budget.extend(lease, 2)
    assert (refused.value.scope, refused.value.held) == ("team", 9)
    await budget.extend(lease, 1)
    team = await budget.get_team("eng")
    assert (team.held, team.available, team.members["ada"].held) == (10, 0, 3)


async def test_a_model_cap_refuses_an_extension_at_the_leases_model(
    make_budget: MakeBudget,
) -> None:
    capped = make_budget(model_caps=True)
    await _team(capped)
    await capped.set_limits("user", "ada", model=GPT, daily=5)
    lease = await capped.reserve("ada", 2, "p1", team_id="eng", model=GPT)
    await capped.extend(lease, 1)
    mr = capped.keys.model_held("user", "ada", GPT)
    assert await capped.redis.get(mr) == b"3000000"
    before = await _snapshot(capped)
    with pytest.raises(BudgetExceededError) as refused:
        await capped.extend(lease.id, 3)
    error = refused.value
    assert (error.model, error.scope, error.limit, error.held) == (GPT, "user", 5, 3)
    assert await _snapshot(capped) == before
    # another model's lease is not bound by it
    other = await capped.reserve("ada", 2, "p1", team_id="eng", model="gpt-4o-mini")
    await capped.extend(other, 10)
    await capped.extend(lease, 2)
    assert await capped.redis.get(mr) == b"5000000"
    project_mr = capped.keys.model_held("project", "p1", GPT)
    assert await capped.redis.get(project_mr) == b"5000000"
    # the settle frees the model's held amount of the whole hold
    await capped.settle(lease, 4)
    assert await capped.redis.get(mr) is None
    assert await capped.redis.get(project_mr) is None
    spent = (await capped.get_usage("ada", model=GPT))["user"].model
    assert spent is not None and spent.daily.spent == 4
    await capped.release(other)
    assert await _kept(capped) == _freed(96_000_000)


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


async def test_a_removed_members_lease_is_not_extended_but_still_settles(
    budget: BudgetManager,
) -> None:
    await _team(budget)
    lease = await budget.reserve("ada", 2, team_id="eng")
    await budget.remove_team_member("eng", "ada")
    before = await _snapshot(budget)
    with pytest.raises(NotATeamMemberError):
        await budget.extend(lease, 1)
    with pytest.raises(NotATeamMemberError):
        await budget.extend(lease.id, 0, ttl_seconds=3600)  # nor more time
    assert await _snapshot(budget) == before
    await budget.settle(lease, 2)
    kept = await _kept(budget)
    assert (kept["pool"], kept["pool_held"], kept["member_held"]) == (
        98_000_000,
        0,
        None,
    )


async def test_finished_and_unknown_team_leases_are_refused(
    budget: BudgetManager, clock: FakeClock
) -> None:
    await _team(budget)
    settled = await budget.reserve("ada", 1, team_id="eng")
    released = await budget.reserve("ada", 1, team_id="eng")
    expired = await budget.reserve("ada", 1, team_id="eng", ttl_seconds=1)
    await budget.settle(settled, 1)
    await budget.release(released)
    clock.advance(2)
    before = await _snapshot(budget)
    for lease, state in (
        (settled, "settled"),
        (released, "released"),
        (expired, "expired"),
        ("0" * 28 + ".eng", "unknown"),
    ):
        with pytest.raises(LeaseStateError, match=state):
            await budget.extend(lease, 1)
    assert await _snapshot(budget) == before


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


@pytest.mark.parametrize(
    ("setting", "window"),
    [("weekly_user_limit", "weekly"), ("per_minute_user_limit", "minute")],
)
async def test_the_users_weekly_and_per_minute_caps_bind_an_extension(
    make_budget: MakeBudget, setting: str, window: str
) -> None:
    budget = make_budget(**{setting: 5}, cap_actions=True)
    await _team(budget)
    lease = await budget.reserve("ada", 2, team_id="eng")
    await budget.extend(lease, 3)  # 5: up to the cap exactly
    before = await _snapshot(budget)
    with pytest.raises(BudgetExceededError) as refused:
        await budget.extend(lease, 1)
    assert (refused.value.scope, refused.value.window) == ("user", window)
    assert await _snapshot(budget) == before
    await budget.settle(lease, 4)
    assert (await budget.get_team("eng")).balance == 96


def test_without_model_caps_team_extend_carries_nothing_of_them() -> None:
    constants = {name: "0" for name in SCRIPT_CONSTANTS}
    constants.update(BASE="sg:{sg}:", LOW_BALANCE="-1")
    off = configured_source("team_extend", {**constants, "MODEL_CAPS": "0"})
    on = configured_source("team_extend", {**constants, "MODEL_CAPS": "1"})
    for helper in (b"model_admit", b"model_add_held"):
        assert helper not in off and helper in on


async def test_a_hold_the_teams_purge_let_go_is_not_grown_again(
    make_budget: MakeBudget,
) -> None:
    """A manager whose clock runs ahead (here: the system's, months after
    the test clock's) purges the team's holds it sees expired; a hold still
    pending by the extending manager's clock is then gone for the team, and
    its extension is refused as expired rather than held again."""
    budget = make_budget()
    await _team(budget)
    lease = await budget.reserve("ada", 2, team_id="eng")
    ahead = make_budget(use_clock=False)
    assert (await ahead.get_team("eng")).held == 0
    before = await _snapshot(budget)
    with pytest.raises(LeaseStateError, match="expired"):
        await budget.extend(lease, 1)
    assert await _snapshot(budget) == before
    await budget.settle(lease, 2)  # (a fact: still charged to the pool)
    kept = await _kept(budget)
    assert (kept["pool"], kept["pool_held"], kept["user"]) == (98_000_000, 0, None)


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
