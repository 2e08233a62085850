"""Refunds of a team charge: the money back to the team's pool, the member's
spending on the team of the charge's own day and month lowered, the user's,
project's and global counters as any refund; never above the charge (also
with 50 at once), idempotent, and a refused refund changes nothing.

How: on both backends (``budget`` / ``make_budget``, the injected clock), a
team charge made by each call that makes one (``deduct``, ``record_spend``,
``settle``) is refunded; the pool and the member through ``get_team``, the
user's counters through ``get_usage``, a past day's counters by their keys,
the refund's ledger entry from the stream; a refusal against a snapshot of
every key (``test_teams``'). A window time zone changed between a charge and
its refund (the charge's id then names another day than its record), the
spool's replay of a refund, and the HTTP and command line refunds are
checked too; the Postgres row and the team analytics on the real Redis and
a migrated database (``pg_fixtures``).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from cli_helpers import _budget_call, _run, prefix
from conftest import FakeClock, MakeBudget
from server_helpers import AUTH, MakeClient, make_client
from spendgate import (
    Analytics,
    BudgetManager,
    IdempotencyConflictError,
    RefundExceedsChargeError,
    UnknownEntryError,
)
from spendgate.cli import EXIT_OK
from spendgate.core.protocol import FIELD
from spool_helpers import _drained, _manager, _Switch, flaky
from test_ledger_net import _flush
from test_teams import _entries, _snapshot

__all__ = ["flaky", "make_client", "prefix"]  # (fixtures, used by name)

# ledger_dsn
pytest_plugins = ("pg_fixtures",)

D = Decimal
#: what the charge of each test takes off the pool
CHARGE = 10


async def _team(budget: BudgetManager, team: str = "eng") -> None:
    await budget.create_team(team, initial_balance=100)
    await budget.add_team_member(team, "ada", daily_cap=50, monthly_cap=500)


async def _charge(budget: BudgetManager, how: str, team: str = "eng") -> str:
    """A team charge of CHARGE, made by ``how``: its entry id."""
    if how == "deduct":
        return (await budget.deduct("ada", CHARGE, "p", team_id=team)).entry_id
    if how == "record_spend":
        return (await budget.record_spend("ada", CHARGE, "p", team_id=team)).entry_id
    lease = await budget.reserve("ada", CHARGE + 2, "p", team_id=team)
    return (await budget.settle(lease, CHARGE)).entry_id


async def _member(budget: BudgetManager, team: str = "eng") -> tuple[Any, ...]:
    """The pool's balance and held amount, the member's spent today and this month."""
    t = await budget.get_team(team)
    ada = t.members["ada"]
    return t.balance, t.held, ada.spent_today, ada.spent_this_month


async def _user(budget: BudgetManager) -> list[tuple[Decimal, Decimal]]:
    """The user's, project's and global spent today and this month."""
    usage = await budget.get_usage("ada", "p")
    return [(usage[s].daily.spent, usage[s].monthly.spent) for s in usage]


@pytest.mark.parametrize("how", ["deduct", "record_spend", "settle"])
async def test_a_team_charge_refunded_in_part_then_in_full(
    budget: BudgetManager, how: str
) -> None:
    await _team(budget)
    charge = await _charge(budget, how)
    assert charge.endswith(".eng")
    assert await _member(budget) == (90, 0, 10, 10)
    assert await _user(budget) == [(10, 10)] * 3

    part = await budget.refund(charge, 4, reason="partly wrong")
    assert (part.team_id, part.charge_id, part.replayed) == ("eng", charge, False)
    assert (part.refunded, part.refundable_left, part.balance_after) == (4, 6, 94)
    assert await _member(budget) == (94, 0, 6, 6)
    assert await _user(budget) == [(6, 6)] * 3

    rest = await budget.refund(charge)
    assert (rest.refunded, rest.refundable_left, rest.balance_after) == (6, 0, 100)
    assert await _member(budget) == (100, 0, 0, 0)
    assert await _user(budget) == [(0, 0)] * 3
    with pytest.raises(RefundExceedsChargeError):
        await budget.refund(charge, "0.000001")

    refunds = [e for e in await _entries(budget) if e[FIELD["kind"]] == "refund"]
    assert [e[FIELD["amount"]] for e in refunds] == ["4000000", "6000000"]
    for entry in refunds:
        assert entry[FIELD["team_id"]] == "eng" and entry[FIELD["user_id"]] == "ada"
        assert entry[FIELD["link_id"]] == charge
        assert entry[FIELD["project_id"]] == "p"
    # the user's own balance was never touched, nor held anything
    assert (await budget.get_usage("ada"))["user"].balance == 0


async def test_a_refund_of_the_users_own_charge_names_no_team(
    budget: BudgetManager,
) -> None:
    await _team(budget)
    own = await budget.record_spend("ada", 3)
    assert "." not in own.entry_id
    result = await budget.refund(own.entry_id)
    assert (result.team_id, result.refunded) == (None, 3)
    assert (await budget.get_team("eng")).balance == 100


async def test_partial_refunds_never_add_up_to_more_than_the_charge(
    budget: BudgetManager,
) -> None:
    await _team(budget)
    charge = await _charge(budget, "deduct")
    await budget.refund(charge, 6)
    with pytest.raises(RefundExceedsChargeError) as refused:
        await budget.refund(charge, 6)
    assert refused.value.refundable == 4
    assert await _member(budget) == (96, 0, 4, 4)
    assert (await budget.refund(charge, 4)).refundable_left == 0
    assert await _member(budget) == (100, 0, 0, 0)


async def test_fifty_refunds_at_once_give_back_exactly_the_charge(
    budget: BudgetManager,
) -> None:
    await _team(budget)
    charge = await _charge(budget, "record_spend")
    results = await asyncio.gather(
        *(budget.refund(charge, 1) for _ in range(50)), return_exceptions=True
    )
    done = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, RefundExceedsChargeError)]
    assert (len(done), len(refused)) == (10, 40)
    assert sorted(r.refundable_left for r in done) == list(range(10))
    assert await _member(budget) == (100, 0, 0, 0)
    assert await _user(budget) == [(0, 0)] * 3


async def test_a_refund_lowers_the_charges_own_day_and_month(
    budget: BudgetManager, clock: FakeClock
) -> None:
    # charged on the last day of March, refunded on the 1st of April
    clock.set(datetime(2026, 3, 31, 12, tzinfo=UTC))
    await _team(budget)
    charge = await _charge(budget, "deduct")
    clock.advance(days=1)
    await budget.deduct("ada", 5, "p", team_id="eng")
    assert await _member(budget) == (85, 0, 5, 5)
    result = await budget.refund(charge, 7)
    assert result.balance_after == 92
    # today's and this month's counters are April's: as they were
    assert await _member(budget) == (92, 0, 5, 5)
    assert await _user(budget) == [(5, 5)] * 3
    team_keys = budget.keys.team_keys("eng", "20260331", "202603")
    redis = budget.redis
    assert await redis.hget(team_keys[4], "ada") == b"3000000"
    assert await redis.hget(team_keys[5], "ada") == b"3000000"
    assert await redis.get(budget.keys.day("20260331", "user", "ada")) == b"3000000"
    assert await redis.get(budget.keys.month("202603", "project", "p")) == b"3000000"
    await budget.refund(charge)  # the rest: March's member fields go at zero
    assert await redis.hget(team_keys[4], "ada") is None
    assert await redis.hget(team_keys[5], "ada") is None
    assert await _member(budget) == (95, 0, 5, 5)


async def test_a_counter_gone_is_not_made_again(budget: BudgetManager) -> None:
    await _team(budget)
    charge = await _charge(budget, "deduct")
    # (the test clock's day)
    team_keys = budget.keys.team_keys("eng", "20260315", "202603")
    await budget.redis.delete(team_keys[4])  # (as if it expired)
    await budget.refund(charge, 4)
    assert not await budget.redis.exists(team_keys[4])
    assert await _member(budget) == (94, 0, 0, 6)


async def test_a_refund_is_idempotent_by_key(budget: BudgetManager) -> None:
    await _team(budget)
    charge = await _charge(budget, "settle")
    first = await budget.refund(charge, 3, idempotency_key="r1")
    again = await budget.refund(charge, 3, idempotency_key="r1")
    assert again.replayed and again.entry_id == first.entry_id
    assert (again.refunded, again.balance_after, again.team_id) == (3, 93, "eng")
    before = await _snapshot(budget)
    with pytest.raises(IdempotencyConflictError):
        await budget.refund(charge, 4, idempotency_key="r1")
    assert await _snapshot(budget) == before
    assert await _member(budget) == (93, 0, 7, 7)


async def test_a_refused_refund_changes_nothing(budget: BudgetManager) -> None:
    await _team(budget)
    await _team(budget, "ops")
    charge = await _charge(budget, "deduct")
    own = (await budget.record_spend("ada", 1)).entry_id
    await budget.refund(charge, 2)
    before = await _snapshot(budget)
    with pytest.raises(RefundExceedsChargeError):
        await budget.refund(charge, 9)
    unknown = [
        charge[:28] + ".ops",  # the charge's id, another team's: no such charge
        own + ".eng",  # the user's own charge, made to look like a team's
        "0" * 28 + ".eng",
        "z" * 28 + ".eng",  # not an id: a plain refund, of no charge
        "f" * 28 + ".eng",  # a time past year 9999
        charge + "x",
    ]
    for entry_id in unknown:
        with pytest.raises(UnknownEntryError):
            await budget.refund(entry_id, 1)
    assert await _snapshot(budget) == before
    assert (await budget.get_team("ops")).balance == 100


async def test_a_team_id_holding_separators_is_cut_by_its_length(
    budget: BudgetManager,
) -> None:
    team = "t|w1|x"  # ("|w" also marks a replay's warnings)
    await _team(budget, team)
    first = await budget.deduct("ada", 2, team_id=team, idempotency_key="d")
    again = await budget.deduct("ada", 2, team_id=team, idempotency_key="d")
    assert again.replayed and again.entry_id == first.entry_id
    assert first.entry_id.endswith("." + team) and again.balance_after == 98
    spent = await budget.record_spend("ada", 3, team_id=team, idempotency_key="s")
    same = await budget.record_spend("ada", 3, team_id=team, idempotency_key="s")
    assert same.replayed and same.entry_id == spent.entry_id
    assert same.occurred_at == spent.occurred_at
    lease = await budget.reserve("ada", 4, team_id=team)
    settled = await budget.settle(lease.id, 4)
    resettled = await budget.settle(lease.id, 4)
    assert resettled.replayed and resettled.entry_id == settled.entry_id
    for charge in (first.entry_id, spent.entry_id, settled.entry_id):
        assert (await budget.refund(charge)).team_id == team
    assert await _member(budget, team) == (100, 0, 0, 0)


async def test_with_model_caps_the_models_counters_go_down_too(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(model_caps=True)
    await _team(budget)
    charge = await budget.deduct("ada", CHARGE, "p", team_id="eng", model="gpt-x")
    await budget.refund(charge.entry_id, 4)
    usage = await budget.get_usage("ada", "p", model="gpt-x")
    for scope in ("user", "project", "global"):
        model = usage[scope].model
        assert model is not None
        assert (model.daily.spent, model.monthly.spent) == (6, 6)
    assert await _member(budget) == (94, 0, 6, 6)


async def test_a_window_time_zone_changed_since_the_charge(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    # 23:30 in UTC is already the next day in Tokyo: the charge's id says
    # the 16th there, its record the 15th; the refund finds that day's keys
    clock.set(datetime(2026, 3, 15, 23, 30, tzinfo=UTC))
    before = make_budget()
    await _team(before)
    charge = await _charge(before, "deduct")
    after = make_budget(window_timezone="Asia/Tokyo")
    result = await after.refund(charge, 4)
    assert (result.refunded, result.balance_after) == (4, 94)
    team_keys = after.keys.team_keys("eng", "20260315", "202603")
    assert await after.redis.hget(team_keys[4], "ada") == b"6000000"
    assert await after.redis.hget(team_keys[5], "ada") == b"6000000"
    tokyo = after.keys.team_keys("eng", "20260316", "202603")
    assert not await after.redis.exists(tokyo[4])


async def test_a_team_refund_spooled_while_down_replays_once(
    flaky: tuple[aioredis.Redis, _Switch, str], tmp_path: Path
) -> None:
    client, switch, _ = flaky
    async with _manager(flaky, tmp_path) as budget:
        await _team(budget)
        charge = await _charge(budget, "record_spend")
        switch.mode = "down"
        spooled = await budget.refund(charge, 4, idempotency_key="k")
        assert spooled.spooled and spooled.team_id == "eng"
        switch.mode = "ok"
        await _drained(budget)
        assert await _member(budget) == (94, 0, 6, 6)
        again = await budget.refund(charge, 4, idempotency_key="k")
        assert again.replayed and again.entry_id == spooled.entry_id
        assert budget.spool is not None and budget.spool.dead_letters == 0
        switch.mode = "lost_reply"
        lost = await budget.refund(charge, 1, idempotency_key="k2")
        assert lost.spooled
        switch.mode = "ok"
        await _drained(budget)
        assert await _member(budget) == (95, 0, 5, 5)


async def test_a_spooled_refund_of_a_day_its_id_does_not_say_replays(
    flaky: tuple[aioredis.Redis, _Switch, str], tmp_path: Path
) -> None:
    _, switch, _ = flaky
    async with _manager(flaky, tmp_path / "utc") as first:
        await _team(first)
        charge = await _charge(first, "deduct")
    # (the spool's clock starts on 2026-03-15 12:00 UTC: the 16th at 12:00
    # on Kiritimati, UTC+14)
    async with _manager(
        flaky, tmp_path / "line", window_timezone="Pacific/Kiritimati"
    ) as later:
        switch.mode = "down"
        assert (await later.refund(charge, 3)).spooled
        switch.mode = "ok"
        await _drained(later)
        assert later.spool is not None and later.spool.dead_letters == 0
        keys = later.keys.team_keys("eng", "20260315", "202603")
        assert await later.redis.hget(keys[4], "ada") == b"7000000"
        assert (await later.get_team("eng")).balance == 93


async def test_a_team_refund_over_http(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client()
    made = await client.post(
        "/v1/teams", json={"team_id": "eng", "initial_balance": "100"}, headers=AUTH
    )
    assert made.status_code == 201, made.text
    member = await client.put("/v1/teams/eng/members/ada", json={}, headers=AUTH)
    assert member.status_code == 200, member.text
    spent = await client.post(
        "/spend", json={"user_id": "ada", "cost": "10", "team_id": "eng"}, headers=AUTH
    )
    charge = spent.json()["entry_id"]
    assert charge.endswith(".eng")
    refund = await client.post(
        "/v1/refunds", json={"entry_id": charge, "amount": "4"}, headers=AUTH
    )
    assert refund.status_code == 200, refund.text
    assert refund.json() == {
        **refund.json(),
        "charge_id": charge,
        "refunded": "4",
        "refundable_left": "6",
        "balance_after": "94",
        "team_id": "eng",
    }
    team = (await client.get("/v1/teams/eng", headers=AUTH)).json()
    assert team["balance"] == "94"
    too_much = await client.post(
        "/v1/refunds", json={"entry_id": charge, "amount": "7"}, headers=AUTH
    )
    assert too_much.status_code == 409
    fake = await client.post(
        "/v1/refunds", json={"entry_id": charge[:28] + ".ops"}, headers=AUTH
    )
    assert fake.status_code == 404


def test_a_team_refund_on_the_command_line(
    prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _budget_call("create_team", "eng", initial_balance=100)
    _budget_call("add_team_member", "eng", "ada")
    charge = _budget_call("record_spend", "ada", 3, team_id="eng").entry_id
    code, out, _ = _run(capsys, "refund", charge, "--amount", "1", "--json")
    assert code == EXIT_OK
    body = json.loads(out)
    assert (body["team_id"], body["balance_after"], body["refundable_left"]) == (
        "eng",
        "98",
        "2",
    )
    code, out, _ = _run(capsys, "refund", charge)
    assert code == EXIT_OK and "refunded 2 USD" in out
    assert "back to the pool of team eng: balance 100" in out


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["redis"], indirect=True)
async def test_the_refunds_ledger_rows_name_the_team(
    make_budget: MakeBudget, redis_client: aioredis.Redis, ledger_dsn: str
) -> None:
    budget = make_budget(postgres_dsn=ledger_dsn)
    await _team(budget)
    await budget.add_team_member("eng", "bob")
    ada = await _charge(budget, "deduct")
    bob = await budget.record_spend("bob", 5, team_id="eng")
    await budget.refund(ada, 4)
    await budget.refund(bob.entry_id)
    assert await _flush(budget, redis_client) == 5
    conn = await asyncpg.connect(ledger_dsn)
    rows = await conn.fetch(
        "SELECT user_id, team_id, amount, link_id FROM spendgate_ledger"
        " WHERE kind = 'refund' ORDER BY amount"
    )
    await conn.close()
    assert [tuple(r) for r in rows] == [
        ("ada", "eng", D(4), ada),
        ("bob", "eng", D(5), bob.entry_id),
    ]
    async with Analytics(dsn=ledger_dsn) as analytics:
        teams = await analytics.spend_by_team()
        assert [(g.key, g.calls, g.total, g.refunded) for g in teams] == [
            ("eng", 2, D(6), D(9))
        ]
        members = await analytics.spend_by_team_member()
        assert [(m.user_id, m.calls, m.total) for m in members] == [
            ("ada", 1, D(6)),
            ("bob", 1, D(0)),
        ]
