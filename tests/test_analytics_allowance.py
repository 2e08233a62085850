"""Analytics say how much of the spend plans' free allowances paid.

How: on the real Redis with an injected clock, a user on a plan with an
allowance of 100 (and 200 of credits) is charged by ``record_spend``,
``deduct`` and ``settle``, partly and wholly from the allowance, beside a
user on no plan; some of the allowance-paid charges are refunded, in part
and in full, a day later (a refund gives the balance's part back first, the
allowance's last). Everything is flushed into a fresh Postgres database and
every aggregate (per user, project, model, day, the stats, the credits) is
compared with the arithmetic done by hand: the allowance total is each
charge's ``allowance_used`` netted as the spend total nets the charge. The
CLI's JSON and tables carry it too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from conftest import FakeClock, MakeBudget
from spendgate import Analytics, Flusher

# ledger_dsn
pytest_plugins = ("pg_fixtures",)
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("backend", ["redis"], indirect=True),
]

D13 = datetime(2026, 3, 13, 9, tzinfo=UTC)
D14 = datetime(2026, 3, 14, 9, tzinfo=UTC)
D15 = datetime(2026, 3, 15, 9, tzinfo=UTC)


@pytest.fixture
async def charged(
    make_budget: MakeBudget,
    redis_client: aioredis.Redis,
    clock: FakeClock,
    ledger_dsn: str,
) -> None:
    """The charges, by hand (amount, allowance used, refunded -> net, net
    allowance = least(allowance used, net)):

    ====  ===  ====  =======  ======  ========  =========  ===  =========
    fact  day  user  project  model   amount    allowance  ref  net / al.
    ====  ===  ====  =======  ======  ========  =========  ===  =========
    c1    14   ada   pa       gpt     60        60         15   45 / 45
    c2    14   ada   -        -       60 (ded.) 40         30   30 / 30
    c3    14   ada   -        -       30        0          0    30 / 0
    c4    14   bob   -        -       25        0          0    25 / 0
    c5    15   ada   -        claude  10 (set.) 10         0    10 / 10
    c6    15   ada   -        -       5         5          5    0 / 0
    ====  ===  ====  =======  ======  ========  =========  ===  =========

    c5 draws on the allowance the refunds of c1 and c2 gave back (25).
    """
    budget = make_budget(postgres_dsn=ledger_dsn)
    clock.set(D13)
    await budget.set_plan("pro", free_allowance=100, period="monthly")
    await budget.add_credits("ada", 200)
    await budget.add_credits("bob", 100)
    await budget.assign_plan("ada", "pro")
    clock.set(D14)
    c1 = await budget.record_spend("ada", "60", project_id="pa", model="gpt")
    c2 = await budget.deduct("ada", "60")
    c3 = await budget.record_spend("ada", "30")
    c4 = await budget.record_spend("bob", "25")
    assert [c.allowance_used for c in (c1, c2, c3, c4)] == [60, 40, 0, 0]
    clock.set(D15)
    await budget.refund(c2.entry_id, "30")  # 20 to the balance, 10 to the allowance
    await budget.refund(c1.entry_id, "15")  # all to the allowance
    lease = await budget.reserve("ada", "10")
    c5 = await budget.settle(lease, "10", model="claude")
    c6 = await budget.record_spend("ada", "5")
    await budget.refund(c6.entry_id)
    assert (c5.allowance_used, c6.allowance_used) == (10, 5)
    # the balance moved by what the allowance did not pay: 200 - (115 - 85)
    assert (await budget.get_balance("ada")).total == Decimal(170)
    flusher = Flusher(budget.config, redis=redis_client)
    try:
        await flusher.run_once()
    finally:
        await flusher.aclose()


async def test_spend_groups_carry_the_allowance_total(
    charged: None, ledger_dsn: str
) -> None:
    async with Analytics(dsn=ledger_dsn) as analytics:
        users = await analytics.spend_by_user()
        projects = await analytics.spend_by_project()
        models = await analytics.spend_by_model()
        top = await analytics.top_users(limit=1)
    assert [(u.key, u.calls, u.total, u.refunded, u.allowance) for u in users] == [
        ("ada", 5, Decimal(115), Decimal(50), Decimal(85)),
        ("bob", 1, Decimal(25), Decimal(0), Decimal(0)),
    ]
    assert [(t.key, t.allowance) for t in top] == [("ada", Decimal(85))]
    assert [(p.key, p.total, p.allowance) for p in projects] == [
        (None, Decimal(95), Decimal(40)),
        ("pa", Decimal(45), Decimal(45)),
    ]
    assert [(m.key, m.total, m.allowance) for m in models] == [
        (None, Decimal(85), Decimal(30)),
        ("gpt", Decimal(45), Decimal(45)),
        ("claude", Decimal(10), Decimal(10)),
    ]


async def test_days_stats_and_credits_carry_the_allowance_total(
    charged: None, ledger_dsn: str
) -> None:
    async with Analytics(dsn=ledger_dsn) as analytics:
        daily = await analytics.daily_spend()
        stats = await analytics.stats()
        from_15th = await analytics.stats(D15.date())
        until_15th = await analytics.stats(until=D15.date())
        credits = await analytics.credits_by_user()
    # refunds count on their charge's day: the 14th's, given on the 15th
    assert [(d.day, d.calls, d.total, d.allowance) for d in daily] == [
        (D14.date(), 4, Decimal(130), Decimal(75)),
        (D15.date(), 2, Decimal(10), Decimal(10)),
    ]
    assert (stats.calls, stats.total, stats.allowance) == (6, Decimal(140), 85)
    assert (from_15th.total, from_15th.allowance) == (Decimal(10), Decimal(10))
    assert (until_15th.total, until_15th.allowance) == (Decimal(130), Decimal(75))
    ada = next(c for c in credits if c.user_id == "ada")
    assert (ada.granted, ada.spent, ada.allowance, ada.net) == (
        Decimal(200),
        Decimal(115),
        Decimal(85),
        Decimal(85),
    )
    # net + allowance: what ada's balance moved by (200 -> 170)
    assert ada.net + ada.allowance == Decimal(170)
    bob = next(c for c in credits if c.user_id == "bob")
    assert (bob.spent, bob.allowance) == (Decimal(25), Decimal(0))


def _report(*args: str, dsn: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDGATE_")}
    env["SPENDGATE_POSTGRES_DSN"] = dsn
    return subprocess.run(
        [sys.executable, "-m", "spendgate.cli", "report", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_cli_reports_show_the_allowance_total(
    charged: None, ledger_dsn: str
) -> None:
    users = _report("users", "--json", dsn=ledger_dsn)
    assert users.returncode == 0, users.stderr
    rows = json.loads(users.stdout)["rows"]
    assert [(r["key"], r["total"], r["allowance"]) for r in rows] == [
        ("ada", "115", "85"),
        ("bob", "25", "0"),
    ]
    daily = _report("daily", dsn=ledger_dsn)
    assert daily.returncode == 0, daily.stderr
    lines = daily.stdout.splitlines()
    assert lines[1].split() == ["day", "calls", "users", "total", "allowance"]
    assert lines[2].split() == ["2026-03-14", "4", "2", "130", "75"]
    stats = _report("stats", dsn=ledger_dsn)
    assert "paid by allowances" in stats.stdout
    line = next(x for x in stats.stdout.splitlines() if "paid by allowances" in x)
    assert line.split()[-1] == "85"
