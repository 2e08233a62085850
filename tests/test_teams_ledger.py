"""Teams' ledger: team rows reach Postgres; team facts survive an outage.

How: charges and credits on a team's pool are flushed by a ``Flusher`` into a
freshly migrated database (``pg_fixtures``' ``ledger_dsn``, real Redis), the
rows are read back with asyncpg (``team_id`` on each; a pool's credit is a
``grant`` row with no user), and ``Analytics`` reports spend by team and by
member, net of refunds. The spool tests use ``spool_helpers``' switchable
client (real Redis and fakeredis): a team record, a team settle and a team
credit made while Redis is "down", or whose reply was lost, are replayed
exactly once, even after the member was removed meanwhile.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from conftest import MakeBudget
from spendgate import Analytics, Flusher
from spendgate.core.protocol import FIELD
from spool_helpers import _drained, _manager, _Switch, flaky

__all__ = ["flaky"]  # (the fixture, used by name)

# ledger_dsn
pytest_plugins = ("pg_fixtures",)


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["redis"], indirect=True)
async def test_team_rows_reach_postgres_and_the_analytics(
    make_budget: MakeBudget, redis_client: aioredis.Redis, ledger_dsn: str
) -> None:
    budget = make_budget(postgres_dsn=ledger_dsn)
    await budget.create_team("eng", initial_balance=100)
    await budget.create_team("ops")
    await budget.credit_team("ops", 50)
    for team, user in (("eng", "ada"), ("eng", "bob"), ("ops", "ada")):
        await budget.add_team_member(team, user)
    await budget.record_spend("ada", 3, team_id="eng", model="m")
    spent = await budget.record_spend("bob", 5, team_id="eng")
    await budget.deduct("ada", 2, team_id="ops")
    lease = await budget.reserve("ada", 4, team_id="eng")
    await budget.settle(lease, 1)
    await budget.record_spend("ada", 7)  # on her own: no team
    await budget.refund(spent.entry_id, 1)
    flusher = Flusher(budget.config, redis=redis_client)
    try:
        assert await flusher.run_once() == 8
    finally:
        await flusher.aclose()
    conn = await asyncpg.connect(ledger_dsn)
    try:
        rows = await conn.fetch(
            "SELECT kind, user_id, team_id, amount FROM spendgate_ledger"
        )
    finally:
        await conn.close()
    # (one instant on the test's clock: the rows' order is not the calls')
    assert sorted((tuple(r) for r in rows), key=repr) == sorted(
        [
            ("grant", None, "eng", Decimal(100)),
            ("grant", None, "ops", Decimal(50)),
            ("spend", "ada", "eng", Decimal(3)),
            ("spend", "bob", "eng", Decimal(5)),
            ("spend", "ada", "ops", Decimal(2)),
            ("settle", "ada", "eng", Decimal(1)),
            ("spend", "ada", None, Decimal(7)),
            ("refund", "bob", "eng", Decimal(1)),
        ],
        key=repr,
    )
    async with Analytics(dsn=ledger_dsn) as analytics:
        teams = await analytics.spend_by_team()
        assert [(g.key, g.calls, g.total, g.refunded) for g in teams] == [
            ("eng", 3, Decimal(8), Decimal(1)),
            ("ops", 1, Decimal(2), Decimal(0)),
        ]
        members = await analytics.spend_by_team_member()
        assert [(m.team_id, m.user_id, m.calls, m.total) for m in members] == [
            ("eng", "ada", 2, Decimal(4)),
            ("eng", "bob", 1, Decimal(4)),
            ("ops", "ada", 1, Decimal(2)),
        ]
        only = await analytics.spend_by_team_member("ops")
        assert [(m.user_id, m.total) for m in only] == [("ada", Decimal(2))]
        assert await analytics.spend_by_team(until=lease.expires_at.date()) == []


async def test_team_facts_spooled_while_down_replay_once(
    flaky: tuple[aioredis.Redis, _Switch, str], tmp_path: Path
) -> None:
    client, switch, _ = flaky
    async with _manager(flaky, tmp_path) as budget:
        await budget.create_team("eng", initial_balance=100)
        await budget.add_team_member("eng", "ada")
        lease = await budget.reserve("ada", 4, team_id="eng")
        switch.mode = "down"
        spent = await budget.record_spend("ada", 2, team_id="eng")
        settled = await budget.settle(lease.id, 3)
        credit = await budget.credit_team("eng", 10, idempotency_key="c")
        assert (spent.spooled, settled.spooled, credit.spooled) == (True, True, True)
        assert settled.team_id == spent.team_id == "eng"
        # removed (by another instance) before the replay: the facts were
        # made while a member, and are recorded
        await client.hdel(budget.keys.team_members("eng"), "ada")
        switch.mode = "ok"
        await _drained(budget)
        team = await budget.get_team("eng")
        assert (team.balance, team.held) == (105, 0)
        usage = await budget.get_usage("ada")
        assert (usage["user"].daily.spent, usage["user"].held) == (5, 0)
        assert budget.spool is not None and budget.spool.dead_letters == 0


async def test_a_team_record_whose_reply_was_lost_counts_once(
    flaky: tuple[aioredis.Redis, _Switch, str], tmp_path: Path
) -> None:
    _, switch, _ = flaky
    async with _manager(flaky, tmp_path) as budget:
        await budget.create_team("eng", initial_balance=100)
        await budget.add_team_member("eng", "ada")
        switch.mode = "lost_reply"
        first = await budget.record_spend("ada", 2, team_id="eng")
        keyed = await budget.record_spend("ada", 3, team_id="eng", idempotency_key="k")
        assert first.spooled and keyed.spooled
        switch.mode = "ok"
        await _drained(budget)
        team = await budget.get_team("eng")
        assert (team.balance, team.members["ada"].spent_today) == (95, 5)
        again = await budget.record_spend("ada", 3, team_id="eng", idempotency_key="k")
        assert again.replayed and again.entry_id == keyed.entry_id
        assert (await budget.get_team("eng")).balance == 95


async def test_a_team_deduct_spooled_when_unavailable_charges_the_pool_once(
    flaky: tuple[aioredis.Redis, _Switch, str], tmp_path: Path
) -> None:
    _, switch, _ = flaky
    async with _manager(flaky, tmp_path) as budget:
        await budget.create_team("eng", initial_balance=10)
        await budget.add_team_member("eng", "ada")
        switch.mode = "down"
        res = await budget.deduct(
            "ada", 4, team_id="eng", idempotency_key="d", spool_when_unavailable=True
        )
        assert (res.spooled, res.team_id, res.balance_after) == (True, "eng", None)
        switch.mode = "ok"
        await _drained(budget)
        team = await budget.get_team("eng")
        assert (team.balance, team.members["ada"].spent_today) == (6, 4)
        rows = await budget.redis.xrange(budget.keys.ledger)
        spent = [f for _, f in rows if f[FIELD["kind"].encode()] == b"spend"]
        assert len(spent) == 1 and spent[0][FIELD["team_id"].encode()] == b"eng"
