"""Analytics over the ledger: exact sums per user, project, model and day,
aggregate stats, and time windows that include their start and exclude their end.

How: facts are recorded through ``BudgetManager`` on the real Redis with an
injected clock over three UTC days (one exactly at midnight), flushed into a
fresh database, and every report is compared with the same aggregation done
in Python over the facts' ``Decimal`` amounts; windows bounded at the
calendar's ends are the open ones; a limit is a positive int (a typed
error otherwise), one above what Postgres counts is no limit.
``spendgate report`` is run as a process for its table, its JSON and its
exit codes; a database without the schema says to migrate (exit 2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis

from conftest import FakeClock, MakeBudget
from spendgate import Analytics, ConfigurationError, Flusher, InvalidArgumentError

# ledger_dsn, pg_dsn
pytest_plugins = ("pg_fixtures",)
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("backend", ["redis"], indirect=True),
]

Fact = tuple[datetime, str, str | None, str | None, Decimal]


@pytest.fixture
async def facts(
    make_budget: MakeBudget,
    redis_client: aioredis.Redis,
    clock: FakeClock,
    ledger_dsn: str,
) -> list[Fact]:
    """Spending over 2026-03-13..15, flushed: (when, user, project, model, amount)."""
    budget = make_budget(postgres_dsn=ledger_dsn)
    made: list[Fact] = []

    async def spend(
        when: datetime,
        user: str,
        amount: Decimal,
        project: str | None,
        model: str | None,
    ) -> None:
        clock.set(when)
        i = len(made)
        await budget.record_spend(
            user,
            amount,
            project_id=project,
            model=model,
            metadata={"input_tokens": i, "output_tokens": 2 * i},
        )
        made.append((when, user, project, model, amount))

    await spend(datetime(2026, 3, 13, 9, tzinfo=UTC), "u1", Decimal(5), "pa", "gpt")
    for i in range(1, 101):
        await spend(
            datetime(2026, 3, 14, tzinfo=UTC) + timedelta(minutes=i),
            f"u{i % 4}",
            Decimal(i) / 100,
            "pa" if i % 3 == 0 else None,
            ["gpt", "claude"][i % 2],
        )
    await spend(datetime(2026, 3, 15, tzinfo=UTC), "u2", Decimal("0.25"), None, None)
    clock.set(datetime(2026, 3, 15, 8, tzinfo=UTC))
    lease = await budget.reserve("u9", 10, project_id="pb")
    await budget.settle(lease, "7.5", model="gpt")
    made.append((clock.now, "u9", "pb", "gpt", Decimal("7.5")))
    await budget.add_credits("u1", 100)  # a credit is not spending
    flusher = Flusher(budget.config, redis=redis_client)
    try:
        assert await flusher.run_once() == len(made) + 1
    finally:
        await flusher.aclose()
    return made


def _grouped(facts: list[Fact], index: int) -> list[tuple[Any, int, Decimal]]:
    totals: dict[Any, Decimal] = defaultdict(Decimal)
    calls: dict[Any, int] = defaultdict(int)
    for fact in facts:
        totals[fact[index]] += fact[4]
        calls[fact[index]] += 1
    return sorted(
        ((k, calls[k], totals[k]) for k in totals),
        key=lambda row: (-row[2], row[0] is None, row[0] or ""),
    )


async def test_spend_by_user_project_model(facts: list[Fact], ledger_dsn: str) -> None:
    async with Analytics(dsn=ledger_dsn) as analytics:
        for group, index in (("user", 1), ("project", 2), ("model", 3)):
            got = await analytics.spend_by(group, None, None)  # type: ignore[arg-type]
            assert [(g.key, g.calls, g.total) for g in got] == _grouped(facts, index)
        users = await analytics.spend_by_user()
        projects = await analytics.spend_by_project()
        models = await analytics.spend_by_model()
        top = await analytics.top_users(limit=2)
    assert [u.key for u in top] == [u.key for u in users[:2]]
    assert sum((u.total for u in users), Decimal(0)) == sum(f[4] for f in facts)
    assert None in {p.key for p in projects}  # spend without a project
    assert None in {m.key for m in models}
    gpt = next(m for m in models if m.key == "gpt")
    # Token counts from the metadata: fact i carried i input and 2i output tokens.
    gpt_indexes = [i for i, f in enumerate(facts[:-1]) if f[3] == "gpt"]
    assert gpt.input_tokens == sum(gpt_indexes)
    assert gpt.output_tokens == 2 * sum(gpt_indexes)


async def test_daily_spend_and_windows(facts: list[Fact], ledger_dsn: str) -> None:
    async with Analytics(dsn=ledger_dsn) as analytics:
        daily = await analytics.daily_spend()
        only_14th = await analytics.daily_spend(date(2026, 3, 14), date(2026, 3, 15))
        from_midnight = await analytics.stats(datetime(2026, 3, 15, tzinfo=UTC))
        until_midnight = await analytics.stats(until=datetime(2026, 3, 15, tzinfo=UTC))
    assert [(d.day, d.calls, d.total, d.users) for d in daily] == [
        (date(2026, 3, 13), 1, Decimal(5), 1),
        (date(2026, 3, 14), 100, Decimal("50.5"), 4),
        (date(2026, 3, 15), 2, Decimal("7.75"), 2),
    ]
    assert [d.day for d in only_14th] == [date(2026, 3, 14)]
    # The fact at exactly 00:00 on the 15th is in a window starting then,
    # and not in one ending then.
    assert (from_midnight.calls, from_midnight.total) == (2, Decimal("7.75"))
    assert (until_midnight.calls, until_midnight.total) == (101, Decimal("55.5"))


async def test_windows_at_the_ends_of_the_calendar_are_open(
    facts: list[Fact], ledger_dsn: str
) -> None:
    # (instants whose UTC is year 10000 or year 0: Postgres cannot hold them,
    # but every row lies between them)
    late = datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-23)))
    early = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=23)))
    async with Analytics(dsn=ledger_dsn) as analytics:
        assert await analytics.daily_spend(early, late) == await analytics.daily_spend()
        assert (await analytics.stats(early, late)).total == sum(f[4] for f in facts)
        assert await analytics.spend_by_user(until=early) == []
        assert await analytics.spend_by_team(early, late) == []


async def test_a_limit_is_a_positive_int_and_a_huge_one_is_all(
    facts: list[Fact], ledger_dsn: str
) -> None:
    async with Analytics(dsn=ledger_dsn) as analytics:
        every = await analytics.spend_by_user()
        assert await analytics.spend_by_user(limit=2**70) == every
        assert await analytics.top_users(limit=2**63) == every
        for bad in (0, -1, True, "5", 2.0):
            for query in (
                analytics.spend_by_user,
                analytics.top_users,
                analytics.credits_by_user,
                analytics.spend_by_team,
                analytics.spend_by_team_member,
            ):
                with pytest.raises(InvalidArgumentError, match="limit"):
                    await query(limit=bad)  # type: ignore[operator]
    huge = _report("users", "--limit", "99999999999999999999", dsn=ledger_dsn)
    assert huge.returncode == 0, huge.stderr


async def test_a_database_without_the_schema_says_migrate(
    backend: str, pg_dsn: str
) -> None:
    # (backend: the module's parametrization; no store is used)
    async with Analytics(dsn=pg_dsn) as analytics:
        with pytest.raises(ConfigurationError, match="spendgate migrate"):
            await analytics.stats()
    out = _report("users", dsn=pg_dsn)
    assert out.returncode == 2, out.stderr
    assert "spendgate migrate" in out.stderr


async def test_stats_over_a_window(facts: list[Fact], ledger_dsn: str) -> None:
    async with Analytics(dsn=ledger_dsn) as analytics:
        stats = await analytics.stats(date(2026, 3, 14), date(2026, 3, 15))
        everything = await analytics.stats()
        empty = await analytics.stats(date(2030, 1, 1), date(2030, 1, 2))
    # 0.01, 0.02, ..., 1.00
    assert stats.calls == 100
    assert stats.total == Decimal("50.5")
    assert stats.distinct_users == 4
    assert stats.distinct_projects == 1
    assert stats.mean == Decimal("0.505")
    assert (stats.minimum, stats.maximum) == (Decimal("0.01"), Decimal(1))
    assert stats.percentiles == {
        0.5: Decimal("0.5"),
        0.9: Decimal("0.9"),
        0.95: Decimal("0.95"),
        0.99: Decimal("0.99"),
    }
    assert stats.input_tokens == sum(range(1, 101))
    assert everything.calls == len(facts)
    assert everything.total == sum(f[4] for f in facts)
    assert everything.distinct_users == len({f[1] for f in facts})
    assert (empty.calls, empty.total, empty.mean, empty.maximum) == (0, 0, None, None)
    assert set(empty.percentiles.values()) == {None}


def _report(*args: str, dsn: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDGATE_")}
    if dsn is not None:
        env["SPENDGATE_POSTGRES_DSN"] = dsn
    return subprocess.run(
        [sys.executable, "-m", "spendgate.cli", "report", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_cli_report(facts: list[Fact], ledger_dsn: str) -> None:
    out = _report(
        "stats",
        "--since",
        "2026-03-14",
        "--until",
        "2026-03-15",
        "--json",
        dsn=ledger_dsn,
    )
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["rows"]["calls"] == 100
    assert body["rows"]["total"] == "50.5"
    assert body["rows"]["percentiles"]["0.99"] == "0.99"

    users = _report("users", dsn=ledger_dsn)
    assert users.returncode == 0, users.stderr
    lines = users.stdout.splitlines()
    assert lines[1].split() == [
        "user",
        "calls",
        "total",
        "allowance",
        "input",
        "tokens",
        "output",
        "tokens",
    ]
    first = _grouped(facts, 1)[0]
    assert lines[2].split()[:3] == [first[0], str(first[1]), str(first[2])]

    daily = _report("daily", "--json", dsn=ledger_dsn)
    assert [r["total"] for r in json.loads(daily.stdout)["rows"]] == [
        "5",
        "50.5",
        "7.75",
    ]
    top = _report("top-users", "--limit", "1", "--json", dsn=ledger_dsn)
    assert len(json.loads(top.stdout)["rows"]) == 1

    assert _report("stats", dsn=None).returncode == 2
    assert _report("stats", "--since", "yesterday-ish", dsn=ledger_dsn).returncode == 2
    assert _report("nonsense", dsn=ledger_dsn).returncode == 2
