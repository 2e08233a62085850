"""``adjust_usage`` moves one counter, once, and says so in the ledger.

How: on both backends (real Redis and fakeredis) with the injected clock,
counters are charged by ``record_spend`` and then corrected; the counters
are read back with ``get_usage`` and the raw keys, the ledger stream is
read with XRANGE. Checked: up and down, per scope and window, at a given day
or month; a lowering stops at zero and the entry records what was applied;
an idempotency key replays (once) or conflicts (and nothing changes); every
bad input is a typed error and changes nothing; 200 concurrent lowerings
never take the counter below zero; a correction made while Redis is down is
spooled and applied exactly once when it returns (``spool_helpers``'
switchable client). The HTTP route and the CLI are driven in process
(``httpx.ASGITransport``) and as a process.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from conftest import REDIS_URL, FakeClock, MakeBudget, stream_entries
from spendgate import (
    BudgetManager,
    IdempotencyConflictError,
    InvalidAmountError,
    InvalidArgumentError,
    InvalidIdTypeError,
)
from spendgate.core.protocol import FIELD
from spendgate.server import create_app
from spool_helpers import _drained, _manager, _Switch, flaky  # noqa: F401

TODAY = "20260315"  # the conftest clock's day


async def _entries(budget: BudgetManager) -> list[dict[str, str]]:
    """The ledger stream's entries, by column name."""
    by_name = {name: column for column, name in FIELD.items()}
    return [
        {by_name[k.decode()]: v.decode() for k, v in fields.items()}
        for _sid, fields in await stream_entries(budget)
    ]


async def _adjusts(budget: BudgetManager) -> list[dict[str, str]]:
    return [e for e in await _entries(budget) if e["kind"] == "adjust"]


async def test_up_and_down_per_scope_and_window(budget: BudgetManager) -> None:
    await budget.record_spend("ada", 5, project_id="p1")
    down = await budget.adjust_usage("user", "ada", "-2", reason="double charge")
    assert (down.scope, down.scope_id, down.window, down.period) == (
        "user",
        "ada",
        "daily",
        "2026-03-15",
    )
    assert (down.requested, down.applied, down.spent_after) == (
        Decimal(-2),
        Decimal(-2),
        Decimal(3),
    )
    assert not down.replayed and not down.spooled
    up = await budget.adjust_usage("project", "p1", "1.5", "monthly")
    assert (up.applied, up.spent_after, up.period) == (
        Decimal("1.5"),
        Decimal("6.5"),
        "2026-03",
    )
    glob = await budget.adjust_usage("global", None, "0.25")
    assert glob.scope_id is None and glob.spent_after == Decimal("5.25")
    usage = await budget.get_usage("ada", "p1")
    assert usage["user"].daily.spent == 3  # the user's day only
    assert usage["user"].monthly.spent == 5
    assert usage["project"].daily.spent == 5
    assert usage["project"].monthly.spent == Decimal("6.5")
    assert usage["global"].daily.spent == Decimal("5.25")
    assert usage["global"].monthly.spent == 5

    user, project, everyone = await _adjusts(budget)
    assert user["amount"] == "-2000000" and user["scope"] == "user"
    assert (user["user_id"], user["project_id"], user["window"]) == (
        "ada",
        "",
        "2026-03-15",
    )
    assert json.loads(user["metadata"]) == {
        "reason": "double charge",
        "requested": "-2",
    }
    assert user["entry_id"] == down.entry_id
    assert (project["user_id"], project["project_id"], project["window"]) == (
        "",
        "p1",
        "2026-03",
    )
    assert project["amount"] == "1500000" and project["scope"] == "project"
    assert (everyone["scope"], everyone["user_id"], everyone["project_id"]) == (
        "global",
        "",
        "",
    )


async def test_a_lowering_stops_at_zero_and_records_what_it_applied(
    budget: BudgetManager, redis_client: aioredis.Redis
) -> None:
    await budget.record_spend("bob", "1.5")
    done = await budget.adjust_usage("user", "bob", -10)
    assert (done.requested, done.applied, done.spent_after) == (
        Decimal(-10),
        Decimal("-1.5"),
        Decimal(0),
    )
    nothing = await budget.adjust_usage("user", "bob", "-1")
    assert (nothing.applied, nothing.spent_after) == (Decimal(0), Decimal(0))
    # a counter that does not exist is not made by a lowering
    absent = await budget.adjust_usage("user", "nobody", "-1")
    assert absent.applied == 0
    assert not await redis_client.exists(
        budget.keys.of("nobody").day(TODAY, "user", "nobody")
    )
    amounts = [e["amount"] for e in await _adjusts(budget)]
    assert amounts == ["-1500000", "0", "0"]
    assert (await budget.get_usage("bob"))["user"].daily.spent == 0


async def test_a_raise_creates_a_counter_that_expires_like_the_others(
    budget: BudgetManager, redis_client: aioredis.Redis
) -> None:
    await budget.adjust_usage("user", "cy", "0.0000011")  # a raise rounds up
    key = budget.keys.of("cy").day(TODAY, "user", "cy")
    assert await redis_client.get(key) == b"2"
    await budget.record_spend("cy", 1)
    ttl = await redis_client.pttl(key)
    # the day's end plus the retention (2 days), from the clock's 12:00 (the
    # real Redis counts it down meanwhile)
    assert (12 + 48) * 3600 * 1000 - 60_000 < ttl <= (12 + 48) * 3600 * 1000


async def test_at_picks_the_window(
    budget: BudgetManager,
    clock: FakeClock,
    redis_client: aioredis.Redis,
) -> None:
    clock.set(datetime(2026, 3, 14, 9, tzinfo=UTC))
    await budget.record_spend("dee", 4)
    clock.set(datetime(2026, 3, 15, 12, tzinfo=UTC))
    await budget.record_spend("dee", 1)
    yesterday = await budget.adjust_usage("user", "dee", -3, at=date(2026, 3, 14))
    assert (yesterday.period, yesterday.spent_after) == ("2026-03-14", Decimal(1))
    keys = budget.keys.of("dee")
    assert await redis_client.get(keys.day("20260314", "user", "dee")) == b"1000000"
    assert await redis_client.get(keys.day(TODAY, "user", "dee")) == b"1000000"
    march = await budget.adjust_usage(
        "user", "dee", 2, "monthly", at=datetime(2026, 3, 1, tzinfo=UTC)
    )
    assert (march.period, march.spent_after) == ("2026-03", Decimal(7))
    entries = await _adjusts(budget)
    assert [e["window"] for e in entries] == ["2026-03-14", "2026-03"]
    # made now, whichever window it corrected
    assert {e["occurred_at"] for e in entries} == {
        str(int(clock.now.timestamp() * 1000))
    }


async def test_an_idempotency_key_replays_once_and_conflicts(
    budget: BudgetManager,
) -> None:
    await budget.record_spend("eve", 5)
    first = await budget.adjust_usage("user", "eve", -2, idempotency_key="fix-1")
    again = await budget.adjust_usage("user", "eve", -2, idempotency_key="fix-1")
    assert again.replayed and again.entry_id == first.entry_id
    assert (again.applied, again.spent_after) == (Decimal(-2), Decimal(3))
    with pytest.raises(IdempotencyConflictError):
        await budget.adjust_usage("user", "eve", -3, idempotency_key="fix-1")
    with pytest.raises(IdempotencyConflictError):
        await budget.adjust_usage("user", "eve", -2, "monthly", idempotency_key="fix-1")
    assert (await budget.get_usage("eve"))["user"].daily.spent == 3
    assert len(await _adjusts(budget)) == 1


@pytest.mark.parametrize(
    ("args", "kwargs", "error"),
    [
        (("team", "x", 1), {}, InvalidArgumentError),
        (("user", "x", 1, "weekly"), {}, InvalidArgumentError),
        (("user", "x", 0), {}, InvalidAmountError),
        (("user", "x", "-0.0000001"), {}, InvalidAmountError),  # rounds to 0
        (("user", "x", "NaN"), {}, InvalidAmountError),
        (("user", "x", float("-inf")), {}, InvalidAmountError),
        (("user", "x", True), {}, InvalidAmountError),
        (("user", "x", "--1"), {}, InvalidAmountError),
        (("user", "x", "-1000000001"), {}, InvalidAmountError),
        (("user", "x", [1]), {}, InvalidAmountError),
        (("user", "", 1), {}, InvalidArgumentError),
        (("user", None, 1), {}, InvalidIdTypeError),
        (("user", "x", 1, "daily", 5), {}, InvalidArgumentError),  # reason
        (("user", "x", 1), {"at": datetime(2026, 3, 14)}, InvalidArgumentError),
        (("user", "x", 1), {"at": date(2026, 3, 16)}, InvalidArgumentError),
        (("user", "x", 1), {"at": "2026-03-14"}, InvalidArgumentError),
        # past the counters' retention (2 days after the window)
        (("user", "x", 1), {"at": date(2026, 3, 12)}, InvalidArgumentError),
        (("user", "x", 1, "monthly"), {"at": date(2026, 4, 1)}, InvalidArgumentError),
    ],
)
async def test_bad_input_is_a_typed_error_and_changes_nothing(
    budget: BudgetManager,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: type[Exception],
) -> None:
    await budget.record_spend("x", 1)
    before = await _entries(budget)
    with pytest.raises(error):
        await budget.adjust_usage(*args, **kwargs)
    assert await _entries(budget) == before
    assert (await budget.get_usage("x"))["user"].daily.spent == 1


async def test_the_last_kept_day_and_a_past_month_can_be_corrected(
    budget: BudgetManager,
) -> None:
    done = await budget.adjust_usage("user", "fay", 1, at=date(2026, 3, 13))
    assert done.period == "2026-03-13"
    with pytest.raises(InvalidArgumentError):  # February's counters are gone
        await budget.adjust_usage("user", "fay", 1, "monthly", at=date(2026, 2, 1))


async def test_200_concurrent_lowerings_never_go_below_zero(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget()
    await budget.record_spend("gus", 100)
    done = await asyncio.gather(
        *(budget.adjust_usage("user", "gus", "-0.75") for _ in range(200))
    )
    applied = sum((d.applied or Decimal(0) for d in done), Decimal(0))
    assert applied == -100
    assert sorted({d.applied for d in done}) == [Decimal("-0.75"), Decimal("-0.25"), 0]
    assert (await budget.get_usage("gus"))["user"].daily.spent == 0
    entries = await _adjusts(budget)
    assert len(entries) == 200
    assert sum(int(e["amount"]) for e in entries) == -100_000_000


async def test_a_correction_made_while_redis_is_down_is_applied_once(
    flaky: tuple[aioredis.Redis, _Switch, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    client, switch, prefix = flaky
    async with _manager(flaky, tmp_path) as budget:
        await budget.record_spend("hal", 4)
        switch.mode = "down"
        spooled = await budget.adjust_usage("user", "hal", -1, idempotency_key="h")
        plain = await budget.adjust_usage("user", "hal", -1)
        assert spooled.spooled and plain.spooled
        assert spooled.applied is None and spooled.spent_after is None
        switch.mode = "ok"
        await _drained(budget)
        assert (await budget.get_usage("hal"))["user"].daily.spent == 2
        again = await budget.adjust_usage("user", "hal", -1, idempotency_key="h")
        assert again.replayed and again.entry_id == spooled.entry_id
        assert len(await _adjusts(budget)) == 2


# -- the edges -------------------------------------------------------------------

_AUTH = {"Authorization": "Bearer k"}


async def test_post_v1_adjust(make_budget: MakeBudget) -> None:
    budget = make_budget()
    await budget.record_spend("ivy", 5)
    app = create_app(budget, api_keys=["k"])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as http:
        body = {"scope": "user", "scope_id": "ivy", "amount": "-1.5"}
        ok = await http.post("/v1/adjust", json=body, headers=_AUTH)
        assert ok.status_code == 200, ok.text
        got = ok.json()
        assert (got["applied"], got["spent_after"], got["period"]) == (
            "-1.5",
            "3.5",
            "2026-03-15",
        )
        keyed = {**body, "amount": -1, "idempotency_key": "a1", "reason": "fix"}
        assert (await http.post("/v1/adjust", json=keyed, headers=_AUTH)).json()[
            "spent_after"
        ] == "2.5"
        replay = await http.post("/v1/adjust", json=keyed, headers=_AUTH)
        assert replay.json()["replayed"] is True
        conflict = {**keyed, "amount": -2}
        assert (
            await http.post("/v1/adjust", json=conflict, headers=_AUTH)
        ).status_code == 409
        month = {
            "scope": "global",
            "amount": 2,
            "window": "monthly",
            "at": "2026-03-01",
        }
        assert (await http.post("/v1/adjust", json=month, headers=_AUTH)).json()[
            "period"
        ] == "2026-03"
        assert (await http.post("/v1/adjust", json=body)).status_code == 401
        for bad in (
            {**body, "amount": "-"},
            {**body, "amount": "1e3"},
            {**body, "amount": 0},
            {**body, "window": "hourly"},
            {**body, "at": "yesterday"},
            {**body, "at": "2030-01-01"},
            {**body, "extra": 1},
            {"scope": "user", "amount": 1},  # no id
        ):
            answer = await http.post("/v1/adjust", json=bad, headers=_AUTH)
            assert answer.status_code == 422, (bad, answer.text)
    assert (await budget.get_usage("ivy"))["user"].daily.spent == Decimal("2.5")


def _cli(prefix: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SPENDGATE_")}
    environ.update(SPENDGATE_REDIS_URL=REDIS_URL, SPENDGATE_KEY_PREFIX=prefix, **env)
    return subprocess.run(
        [sys.executable, "-m", "spendgate.cli", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("backend", ["redis"], indirect=True)
async def test_cli_adjust(make_budget: MakeBudget, key_prefix: str) -> None:
    budget = make_budget(use_clock=False)
    await budget.record_spend("jo", 5)
    down = _cli(key_prefix, "adjust", "user", "jo", "-2", "--reason", "typo")
    assert down.returncode == 0, down.stderr
    assert "applied -2" in down.stdout and "counter now 3" in down.stdout
    up = _cli(key_prefix, "adjust", "global", "-", "1", "--window", "monthly", "--json")
    assert up.returncode == 0, up.stderr
    body = json.loads(up.stdout)
    assert (body["scope"], body["applied"], body["window"]) == (
        "global",
        "1",
        "monthly",
    )
    assert _cli(key_prefix, "adjust", "user", "jo", "0").returncode == 2
    assert _cli(key_prefix, "adjust", "user", "jo", "x").returncode == 2
    assert _cli(key_prefix, "adjust", "team", "jo", "1").returncode == 2
    assert (
        _cli(key_prefix, "adjust", "user", "jo", "1", "--at", "2999-01-01").returncode
        == 2
    )
    assert (await budget.get_usage("jo"))["user"].daily.spent == 3


async def test_the_last_window_of_a_month_counts_from_its_end() -> None:
    # (the window arithmetic across a month's end, without a store)
    now = datetime(2026, 4, 1, 0, 30, tzinfo=UTC)
    budget = BudgetManager(clock=FakeClock(now))
    at = now - timedelta(hours=1)
    part, label, ttl = budget._adjusted_window(
        "monthly", int(now.timestamp() * 1000), int(at.timestamp() * 1000)
    )
    assert (part, label) == ("202603", "2026-03")
    assert ttl == 2 * 86400 * 1000 - 30 * 60 * 1000
    await budget.aclose()
