"""Analytics and reconcile count net spend: refunds, adjustments, expiries.

How: charges go through ``BudgetManager`` (injected clock, both backends),
corrections through ``adjust_usage``; refunds, grants and expiries are
written as the grants work's scripts write them (``refund_as_the_script``:
the ``refund`` entry with the charge's user, project, model, ``link_id`` and,
unless told otherwise, its day in ``window``, and the counters of the
charge's day and month lowered by it, as ``lua/refund.lua`` is to do). The
flusher moves part of it to a fresh database and part stays in the stream.
Every analytics figure is compared with the same arithmetic done by hand;
the reconcile of each day must agree, and must name the scopes and the
exact amount when a refund did not lower the counters.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from decimal import Decimal

import asyncpg
import pytest
import redis.asyncio as aioredis

from conftest import FakeClock, MakeBudget
from spendgate import Analytics, BudgetManager, Flusher, SpendRecord
from spendgate.core.keys import Keys
from spendgate.core.money import charge_micros
from spendgate.core.protocol import FIELD, LedgerKind
from spendgate.ledger.reconcile import reconcile

# ledger_dsn
pytest_plugins = ("pg_fixtures",)
pytestmark = pytest.mark.postgres

D13 = datetime(2026, 3, 13, 9, tzinfo=UTC)
D14 = datetime(2026, 3, 14, 9, tzinfo=UTC)
D15 = datetime(2026, 3, 15, 12, tzinfo=UTC)


async def _xadd(
    redis: aioredis.Redis, budget: BudgetManager, kind: LedgerKind, **fields: str
) -> str:
    """A ledger entry as another script writes it, at the clock's time."""
    assert budget._clock is not None
    at = int(budget._clock().timestamp() * 1000)
    entry = fields.pop("entry_id", f"{kind}-{at}-{len(fields)}")
    values = {"entry_id": entry, "kind": str(kind), "occurred_at": str(at), **fields}
    await redis.xadd(
        budget.keys.ledger,
        {FIELD[c]: v for c, v in values.items()},  # type: ignore[misc]
    )
    return entry


async def refund_as_the_script(
    redis: aioredis.Redis,
    budget: BudgetManager,
    charge: SpendRecord,
    amount: str,
    *,
    window: bool = True,
    counters: bool = True,
) -> str:
    """What ``refund`` does to the ledger and the counters."""
    micros = charge_micros(amount)
    day = charge.occurred_at
    fields = {
        "user_id": charge.user_id,
        "project_id": charge.project_id or "",
        "model": charge.model or "",
        "amount": str(micros),
        "link_id": charge.entry_id,
        "entry_id": f"refund-{charge.entry_id}-{amount}",
    }
    if window:
        fields["window"] = day.date().isoformat()
    entry = await _xadd(redis, budget, LedgerKind.REFUND, **fields)
    if counters:
        keys = Keys(budget.config.key_prefix)
        scopes = [("user", charge.user_id), ("global", "")]
        if charge.project_id:
            scopes.append(("project", charge.project_id))
        for scope, scope_id in scopes:
            await redis.decrby(keys.day(f"{day:%Y%m%d}", scope, scope_id), micros)
            await redis.decrby(keys.month(f"{day:%Y%m}", scope, scope_id), micros)
    return entry


async def _flush(budget: BudgetManager, redis: aioredis.Redis) -> int:
    flusher = Flusher(budget.config, redis=redis)
    try:
        return await flusher.run_once()
    finally:
        await flusher.aclose()


# -- analytics -------------------------------------------------------------------


@pytest.fixture
async def net_ledger(
    make_budget: MakeBudget,
    redis_client: aioredis.Redis,
    clock: FakeClock,
    ledger_dsn: str,
) -> None:
    """Charges on the 13th and 14th, their refunds, corrections, credits."""
    budget = make_budget(postgres_dsn=ledger_dsn)
    clock.set(D13)
    ada13 = await budget.record_spend("ada", 10, "p1", "gpt")
    bob13 = await budget.record_spend("bob", 4, "p2", "claude")
    clock.set(D14)
    lease = await budget.reserve("ada", 10, project_id="p1")
    await budget.settle(lease, 6, model="claude")
    await budget.record_spend("carol", 2, model="gpt")
    clock.set(D15)
    await refund_as_the_script(redis_client, budget, ada13, "3")
    await refund_as_the_script(redis_client, budget, bob13, "1", window=False)
    # a refund whose charge is not in the table: on its own row and day
    await _xadd(
        redis_client,
        budget,
        LedgerKind.REFUND,
        user_id="carol",
        model="gpt",
        amount="500000",
        link_id="not-flushed",
    )
    await budget.adjust_usage("user", "ada", -1, at=D14)
    await budget.adjust_usage("project", "p1", 2)
    await budget.adjust_usage("global", None, "-0.5", at=D13)
    await budget.adjust_usage("user", "ada", 5, "monthly")  # a cap's counter only
    await _xadd(
        redis_client,
        budget,
        LedgerKind.GRANT,
        user_id="ada",
        amount="10000000",
        grant_id="g1",
    )
    await _xadd(
        redis_client,
        budget,
        LedgerKind.EXPIRE,
        user_id="ada",
        amount="1500000",
        grant_id="g1",
    )
    await budget.add_credits("carol", 3)
    assert await _flush(budget, redis_client) == 14


def _rows(groups: list[object]) -> list[tuple[object, ...]]:
    return [
        (g.key, g.calls, g.total, g.refunded, g.adjusted)  # type: ignore[attr-defined]
        for g in groups
    ]


async def test_spend_by_counts_refunds_on_the_charge_and_the_scopes_adjustments(
    net_ledger: None, ledger_dsn: str
) -> None:
    d = Decimal
    async with Analytics(dsn=ledger_dsn) as analytics:
        users = await analytics.spend_by_user()
        projects = await analytics.spend_by_project()
        models = await analytics.spend_by_model()
        since_14 = await analytics.spend_by_user(date(2026, 3, 14))
    assert _rows(users) == [
        ("ada", 2, d(12), d(3), d(-1)),
        ("bob", 1, d(3), d(1), d(0)),
        ("carol", 1, d("1.5"), d("0.5"), d(0)),
    ]
    assert _rows(projects) == [
        ("p1", 2, d(15), d(3), d(2)),
        ("p2", 1, d(3), d(1), d(0)),
        (None, 1, d("1.5"), d("0.5"), d(0)),
    ]
    assert _rows(models) == [
        ("claude", 2, d(9), d(1), d(0)),
        ("gpt", 2, d("8.5"), d("3.5"), d(0)),
    ]
    # from the 14th: the refunds of the 13th's charges are the 13th's
    assert _rows(since_14) == [
        ("ada", 1, d(5), d(0), d(-1)),
        ("carol", 1, d("1.5"), d("0.5"), d(0)),
    ]


async def test_daily_and_stats_are_net(net_ledger: None, ledger_dsn: str) -> None:
    d = Decimal
    async with Analytics(dsn=ledger_dsn) as analytics:
        daily = await analytics.daily_spend()
        stats = await analytics.stats()
        day13 = await analytics.stats(date(2026, 3, 13), date(2026, 3, 14))
    assert [
        (x.day, x.calls, x.total, x.users, x.refunded, x.adjusted) for x in daily
    ] == [
        (date(2026, 3, 13), 2, d("9.5"), 2, d(4), d("-0.5")),
        (date(2026, 3, 14), 2, d(8), 2, d(0), d(0)),
        (date(2026, 3, 15), 0, d("-0.5"), 0, d("0.5"), d(0)),
    ]
    assert (stats.calls, stats.total, stats.refunded, stats.adjusted) == (
        4,
        d(17),
        d("4.5"),
        d("-0.5"),
    )
    # per call, net of its refunds: 7, 3, 6, 2
    assert (stats.mean, stats.minimum, stats.maximum) == (d("4.5"), d(2), d(7))
    assert stats.percentiles[0.5] == d(3) and stats.percentiles[0.99] == d(7)
    assert (stats.distinct_users, stats.distinct_projects) == (3, 2)
    assert (day13.calls, day13.total) == (2, d("9.5"))


async def test_credits_by_user(net_ledger: None, ledger_dsn: str) -> None:
    d = Decimal
    async with Analytics(dsn=ledger_dsn) as analytics:
        flows = await analytics.credits_by_user()
        top = await analytics.credits_by_user(limit=1)
    assert [
        (f.user_id, f.granted, f.expired, f.spent, f.net, f.grants, f.expiries)
        for f in flows
    ] == [
        ("ada", d(10), d("1.5"), d(13), d("-4.5"), 1, 1),
        ("carol", d(3), d(0), d("1.5"), d("1.5"), 1, 0),
        ("bob", d(0), d(0), d(3), d(-3), 0, 0),
    ]
    assert [f.user_id for f in top] == ["ada"]


# -- reconcile -------------------------------------------------------------------


async def test_reconcile_agrees_after_refunds_adjustments_and_expiries(
    make_budget: MakeBudget,
    redis_client: aioredis.Redis,
    clock: FakeClock,
    ledger_dsn: str,
) -> None:
    budget = make_budget(postgres_dsn=ledger_dsn)
    r = redis_client
    clock.set(D14)
    ada14 = await budget.record_spend("ada", 10, "p1", "gpt")
    bob14 = await budget.record_spend("bob", 4)
    await _flush(budget, r)
    clock.set(D15)
    await refund_as_the_script(r, budget, ada14, "2")
    await refund_as_the_script(r, budget, bob14, "1", window=False)  # by its link
    await _flush(budget, r)
    # In the stream only: a charge and its refund, without window,
    ada15 = await budget.record_spend("ada", 3, "p1")
    await refund_as_the_script(r, budget, ada15, "0.5", window=False)
    # ... one of a flushed charge of yesterday,
    await refund_as_the_script(r, budget, ada14, "1.25", window=False)
    # corrections, one of them of yesterday, one of a month,
    await budget.adjust_usage("user", "ada", -1)
    await budget.adjust_usage("project", "p1", 2, at=D14)
    await budget.adjust_usage("global", None, 1, "monthly")
    # and credits come and go: no counter moves
    await _xadd(
        r, budget, LedgerKind.EXPIRE, user_id="ada", amount="7000000", grant_id="g"
    )
    await budget.add_credits("ada", 5)
    # a refund Postgres got before its charge (another flusher was faster)
    late = await budget.record_spend("carol", 6)
    conn = await asyncpg.connect(ledger_dsn)
    try:
        await conn.execute(
            "INSERT INTO spendgate_ledger (entry_id, kind, occurred_at, user_id,"
            " amount, link_id) VALUES ('early-refund', 'refund', $1, 'carol', 2, $2)",
            D15,
            late.entry_id,
        )
    finally:
        await conn.close()
    keys = Keys(budget.config.key_prefix)
    for scope, scope_id in (("user", "carol"), ("global", "")):
        await r.decrby(keys.day("20260315", scope, scope_id), 2_000_000)

    yesterday = await reconcile(budget.config, date(2026, 3, 14), redis=r)
    today = await reconcile(budget.config, date(2026, 3, 15), redis=r)
    assert yesterday.ok, yesterday.differences
    assert today.ok, today.differences
    # 14th: 10 + 4 - 2 - 1 - 1.25; 15th: 3 - 0.5 + 6 - 2 (adjustments of users
    # and projects move their own counters, not the global one)
    assert yesterday.redis_total == Decimal("9.75")
    assert today.redis_total == Decimal("6.5")
    assert today.backlog_entries > 0 and yesterday.backlog_entries > 0
    await _flush(budget, r)
    for day in (date(2026, 3, 14), date(2026, 3, 15)):
        again = await reconcile(budget.config, day, redis=r)
        assert again.ok and again.backlog_entries == 0, again.differences


async def test_a_refund_that_did_not_lower_the_counters_is_reported(
    make_budget: MakeBudget,
    redis_client: aioredis.Redis,
    clock: FakeClock,
    ledger_dsn: str,
) -> None:
    budget = make_budget(postgres_dsn=ledger_dsn)
    clock.set(D14)
    charge = await budget.record_spend("ada", 10, "p1")
    clock.set(D15)
    await refund_as_the_script(redis_client, budget, charge, "2.5", counters=False)
    await budget.adjust_usage("user", "ada", -1, at=D14)
    await _flush(budget, redis_client)
    report = await reconcile(budget.config, date(2026, 3, 14), redis=redis_client)
    by_scope = {(x.scope, x.scope_id): x.difference for x in report.differences}
    assert by_scope == {
        ("user", "ada"): Decimal("2.5"),
        ("project", "p1"): Decimal("2.5"),
        ("global", None): Decimal("2.5"),
    }
    assert (await reconcile(budget.config, date(2026, 3, 15), redis=redis_client)).ok


async def test_cli_report_credits_and_net_users(
    net_ledger: None, ledger_dsn: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDGATE_")}
    env["SPENDGATE_POSTGRES_DSN"] = ledger_dsn

    def report(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "spendgate.cli", "report", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    credits = report("credits", "--json")
    assert credits.returncode == 0, credits.stderr
    ada = json.loads(credits.stdout)["rows"][0]
    assert (ada["user_id"], ada["granted"], ada["expired"], ada["net"]) == (
        "ada",
        "10",
        "1.5",
        "-4.5",
    )
    table = report("credits")
    assert table.returncode == 0 and table.stdout.splitlines()[1].split() == [
        "user",
        "granted",
        "expired",
        "spent",
        "allowance",
        "net",
    ]
    users = json.loads(report("users", "--json").stdout)["rows"]
    assert [(u["key"], u["total"], u["refunded"]) for u in users][0] == (
        "ada",
        "12",
        "3",
    )
