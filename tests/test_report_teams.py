"""``spendgate report teams`` and ``report team-members``: the teams'
analytics from the command line.

How: team charges (a record, a deduct, a settled lease) and a charge of a
user's own are flushed into a freshly migrated database (``pg_fixtures``'
``ledger_dsn``, real Redis), then the CLI runs as a subprocess; its JSON and
its table must carry exactly what ``Analytics.spend_by_team`` and
``spend_by_team_member`` return, and a ``--team`` that is empty or too
long, or given to another report, is a usage error (exit 2) that prints no
report. The credits report counts as a user's spending only the charges of
their own, not those a team's pool paid.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from conftest import MakeBudget
from spendgate import Analytics, Flusher
from test_analytics import _report

# ledger_dsn
pytest_plugins = ("pg_fixtures",)


@pytest.fixture
async def team_ledger(
    make_budget: MakeBudget, redis_client: aioredis.Redis, ledger_dsn: str
) -> str:
    budget = make_budget(postgres_dsn=ledger_dsn)
    await budget.create_team("eng", initial_balance=100)
    await budget.create_team("ops", initial_balance=50)
    for team, user in (("eng", "ada"), ("eng", "bob"), ("ops", "ada")):
        await budget.add_team_member(team, user)
    await budget.record_spend("ada", 3, team_id="eng")
    await budget.record_spend("bob", Decimal("5.5"), team_id="eng")
    await budget.deduct("ada", 2, team_id="ops")
    lease = await budget.reserve("ada", 4, team_id="eng")
    await budget.settle(lease, 1)
    await budget.record_spend("ada", 7)  # on her own: no team
    flusher = Flusher(budget.config, redis=redis_client)
    try:
        assert await flusher.run_once() == 7  # 2 pool credits, 5 charges
    finally:
        await flusher.aclose()
    return ledger_dsn


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["redis"], indirect=True)
async def test_report_teams_and_their_members(team_ledger: str) -> None:
    teams = _report("teams", "--json", dsn=team_ledger)
    assert teams.returncode == 0, teams.stderr
    body = json.loads(teams.stdout)
    assert body["kind"] == "teams"
    assert [(r["key"], r["calls"], r["total"]) for r in body["rows"]] == [
        ("eng", 3, "9.5"),
        ("ops", 1, "2"),
    ]

    members = _report("team-members", "--json", dsn=team_ledger)
    assert members.returncode == 0, members.stderr
    rows = json.loads(members.stdout)["rows"]
    assert [(r["team_id"], r["user_id"], r["calls"], r["total"]) for r in rows] == [
        ("eng", "bob", 1, "5.5"),
        ("eng", "ada", 2, "4"),
        ("ops", "ada", 1, "2"),
    ]
    one = _report("team-members", "--team", "ops", "--limit", "5", dsn=team_ledger)
    assert one.returncode == 0, one.stderr
    lines = one.stdout.splitlines()
    assert lines[1].split()[:5] == ["team", "user", "calls", "total", "refunded"]
    assert [line.split()[:4] for line in lines[2:]] == [["ops", "ada", "1", "2"]]

    table = _report("teams", "--limit", "1", dsn=team_ledger)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[1].split()[:3] == ["team", "calls", "total"]
    assert [line.split()[:3] for line in table.stdout.splitlines()[2:]] == [
        ["eng", "3", "9.5"]
    ]


@pytest.mark.postgres
@pytest.mark.parametrize(
    "argv",
    [
        ["team-members", "--team", ""],
        ["team-members", "--team", "x" * 600],
        ["teams", "--team", "eng"],
        ["team-members", "--limit", "0"],
    ],
)
def test_a_bad_team_filter_is_a_usage_error(argv: list[str], ledger_dsn: str) -> None:
    out = _report(*argv, dsn=ledger_dsn)
    assert out.returncode == 2, out.stdout
    assert out.stdout == ""
    assert out.stderr.strip()


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["redis"], indirect=True)
async def test_credits_by_user_leave_the_pools_charges_out(team_ledger: str) -> None:
    # ada spent 7 of her own and 6 on the pools, bob 5.5 on a pool only: a
    # pool's charge never draws on its member's credits
    async with Analytics(dsn=team_ledger) as analytics:
        rows = await analytics.credits_by_user()
    assert {r.user_id: (r.spent, r.net) for r in rows} == {
        "ada": (Decimal(7), Decimal(-7))
    }
    credits = _report("credits", "--json", dsn=team_ledger)
    assert credits.returncode == 0, credits.stderr
    assert [(r["user_id"], r["spent"]) for r in json.loads(credits.stdout)["rows"]] == [
        ("ada", "7")
    ]
