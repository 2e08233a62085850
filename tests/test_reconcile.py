"""Reconcile finds no difference on a healthy deployment and reports a real one.

How: facts (spends, settles, credits) go through ``BudgetManager`` on the
real Redis with an injected clock; part of them is flushed to a fresh
database and part stays in the stream, so the ledger side is Postgres plus
the backlog. Then real differences are made — a counter moved behind the
ledger's back, a row deleted from Postgres — and the report must name the
scopes and the exact amounts. ``spendgate reconcile`` is run as a process
for its exit codes and JSON. A day at the calendar's ends (whose bounds
have no datetime) is a typed error, exit 2, as is a database without the
schema (it says to migrate).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from decimal import Decimal

import asyncpg
import pytest
import redis.asyncio as aioredis

from conftest import REDIS_URL, FakeClock, MakeBudget
from spendgate import BudgetManager, ConfigurationError, Flusher, InvalidArgumentError
from spendgate.core.keys import Keys
from spendgate.ledger.reconcile import reconcile

# ledger_dsn, pg_dsn
pytest_plugins = ("pg_fixtures",)
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("backend", ["redis"], indirect=True),
]

DAY = date(2026, 3, 15)  # the conftest clock's day


async def _record(budget: BudgetManager, start: int, n: int) -> Decimal:
    total = Decimal(0)
    for i in range(start, start + n):
        amount = Decimal(i) / 7  # many decimals: rounded up to the micro-unit
        if i % 3 == 0:
            lease = await budget.reserve(f"u{i % 3}", 50, project_id="p1")
            rec = await budget.settle(lease, amount)
        else:
            rec = await budget.record_spend(
                f"u{i % 4}", amount, project_id="p1" if i % 2 else None
            )
        await budget.add_credits(f"u{i % 4}", 1)
        total += rec.amount
    return total


@pytest.fixture
async def half_flushed(
    make_budget: MakeBudget, redis_client: aioredis.Redis, ledger_dsn: str
) -> tuple[BudgetManager, Decimal]:
    budget = make_budget(postgres_dsn=ledger_dsn)
    flushed = await _record(budget, 1, 40)
    flusher = Flusher(budget.config, redis=redis_client)
    try:
        await flusher.run_once()
    finally:
        await flusher.aclose()
    waiting = await _record(budget, 41, 20)
    return budget, flushed + waiting


async def test_healthy_deployment_has_no_difference(
    half_flushed: tuple[BudgetManager, Decimal], redis_client: aioredis.Redis
) -> None:
    budget, total = half_flushed
    report = await reconcile(budget.config, DAY, redis=redis_client)
    assert report.ok and report.differences == []
    assert report.redis_total == total
    assert report.postgres_total > 0 and report.backlog_total > 0
    assert report.postgres_total + report.backlog_total == total
    assert report.backlog_entries == 20
    # user u0..u3, project p1, global
    assert report.scopes_checked == 6
    # Another day has nothing on either side.
    other = await reconcile(budget.config, date(2026, 3, 14), redis=redis_client)
    assert other.ok and other.redis_total == 0


async def test_a_counter_moved_behind_the_ledgers_back_is_reported(
    half_flushed: tuple[BudgetManager, Decimal], redis_client: aioredis.Redis
) -> None:
    budget, total = half_flushed
    keys = Keys(budget.config.key_prefix)
    # 1.5 charged to u1's and the global day counter without a ledger entry.
    for scope, scope_id in (("user", "u1"), ("global", "")):
        await redis_client.incrby(keys.day("20260315", scope, scope_id), 1_500_000)
    report = await reconcile(budget.config, DAY, redis=redis_client)
    assert not report.ok
    by_scope = {(d.scope, d.scope_id): d for d in report.differences}
    assert set(by_scope) == {("user", "u1"), ("global", None)}
    assert by_scope[("user", "u1")].difference == Decimal("1.5")
    glob = by_scope[("global", None)]
    assert glob.difference == Decimal("1.5")
    assert glob.redis == total + Decimal("1.5")
    assert glob.ledger == total


async def test_a_row_lost_from_postgres_is_reported(
    half_flushed: tuple[BudgetManager, Decimal],
    redis_client: aioredis.Redis,
    ledger_dsn: str,
) -> None:
    budget, _ = half_flushed
    conn = await asyncpg.connect(ledger_dsn)
    try:
        row = await conn.fetchrow(
            "DELETE FROM spendgate_ledger WHERE entry_id = ("
            " SELECT entry_id FROM spendgate_ledger WHERE project_id = 'p1'"
            " AND kind = 'spend' ORDER BY entry_id LIMIT 1)"
            " RETURNING user_id, amount"
        )
    finally:
        await conn.close()
    report = await reconcile(budget.config, DAY, redis=redis_client)
    assert {(d.scope, d.scope_id) for d in report.differences} == {
        ("user", row["user_id"]),
        ("project", "p1"),
        ("global", None),
    }
    assert {d.difference for d in report.differences} == {row["amount"]}


def _cli(prefix: str, dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDGATE_")}
    env.update(
        SPENDGATE_REDIS_URL=REDIS_URL,
        SPENDGATE_KEY_PREFIX=prefix,
        SPENDGATE_POSTGRES_DSN=dsn,
    )
    return subprocess.run(
        [sys.executable, "-m", "spendgate.cli", "reconcile", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_cli_reconcile_exit_codes(
    half_flushed: tuple[BudgetManager, Decimal],
    redis_client: aioredis.Redis,
    ledger_dsn: str,
    clock: FakeClock,
) -> None:
    budget, _ = half_flushed
    prefix = budget.config.key_prefix
    healthy = _cli(prefix, ledger_dsn, "--day", "2026-03-15")
    assert healthy.returncode == 0, healthy.stderr
    assert "no differences" in healthy.stdout

    keys = Keys(prefix)
    await redis_client.incrby(keys.day("20260315", "project", "p1"), 250_000)
    broken = _cli(prefix, ledger_dsn, "--day", "2026-03-15", "--json")
    assert broken.returncode == 1, broken.stderr
    body = json.loads(broken.stdout)
    assert body["ok"] is False
    assert [
        (d["scope"], d["scope_id"], d["difference"]) for d in body["differences"]
    ] == [("project", "p1", "0.25")]
    table = _cli(prefix, ledger_dsn, "--day", "2026-03-15")
    assert table.returncode == 1
    assert "project" in table.stdout and "0.25" in table.stdout

    assert _cli(prefix, ledger_dsn, "--day", "15/03/2026").returncode == 2
    assert _cli(prefix, ledger_dsn, "--day", "9999-12-31").returncode == 2


@pytest.mark.parametrize("zone", ["UTC", "Pacific/Kiritimati"])
async def test_a_day_at_the_ends_of_the_calendar_is_refused(
    make_budget: MakeBudget, redis_client: aioredis.Redis, ledger_dsn: str, zone: str
) -> None:
    budget = make_budget(postgres_dsn=ledger_dsn, window_timezone=zone)
    with pytest.raises(InvalidArgumentError, match="range"):
        await reconcile(budget.config, date(9999, 12, 31), redis=redis_client)


async def test_a_database_without_the_schema_says_migrate(
    make_budget: MakeBudget, redis_client: aioredis.Redis, pg_dsn: str
) -> None:
    budget = make_budget(postgres_dsn=pg_dsn)
    with pytest.raises(ConfigurationError, match="spendgate migrate"):
        await reconcile(budget.config, DAY, redis=redis_client)
    out = _cli(budget.config.key_prefix, pg_dsn, "--day", "2026-03-15")
    assert out.returncode == 2, out.stderr
