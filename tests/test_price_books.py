"""Versioned price books and the deduct they price.

A book is published as an immutable version (and by default activated);
activation switches every instance, including another process, on its next
charge (``deduct`` checks the version inside its script and prices again
when it changed); a charge names the version that priced it on its ledger
entry, and the flusher mirrors every version into Postgres. A book that does
not load stores nothing. Both backends, plus the real Postgres.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from conftest import REDIS_URL, MakeBudget, stream_entries
from spendgate import (
    BudgetManager,
    InsufficientCreditsError,
    InvalidArgumentError,
    PricingConfigError,
    ToolCall,
    UsageMetrics,
)
from spendgate.ops import pricebooks

pytest_plugins = ("pg_fixtures",)

BOOK: dict[str, Any] = {
    "version": 1,
    "models": {
        "gpt-4o": "input_tokens * 0.0000025 + output_tokens * 0.00001",
        "_default": "input_tokens * 0.000001 + output_tokens * 0.000003",
    },
    "tools": {"web_search": "tool_calls * 0.01", "_default": "tool_calls * 0"},
    "search": {"costs": "search_queries * 0.005 + search_results * 0.0005"},
    "fixed": {"batch_job": 20},
}
USAGE = UsageMetrics(
    model="gpt-4o",
    input_tokens=1000,
    output_tokens=200,
    tool_calls=(ToolCall(name="web_search"),),
    search_queries=2,
    search_results=10,
)
#: 1000 x 0.0000025 + 200 x 0.00001 + 0.01 + 2 x 0.005 + 10 x 0.0005
PRICE = Decimal("0.0025") + Decimal("0.002") + Decimal("0.01") + Decimal("0.015")


def _doubled(book: dict[str, Any]) -> dict[str, Any]:
    other = json.loads(json.dumps(book))
    other["models"]["gpt-4o"] = "input_tokens * 0.000005 + output_tokens * 0.00002"
    return other


async def test_publish_activate_list_and_get(make_budget: MakeBudget) -> None:
    budget = make_budget()
    assert await budget.get_pricing() is None
    v1 = await budget.publish_pricing(BOOK, label="first")
    v2 = await budget.publish_pricing(_doubled(BOOK), label="second", activate=False)
    assert (v1, v2) == (1, 2)
    listed = await budget.list_pricing()
    assert [(v.version, v.label, v.active) for v in listed] == [
        (1, "first", True),
        (2, "second", False),
    ]
    assert listed[0].digest != listed[1].digest and listed[0].config is None
    active = await budget.get_pricing()
    assert active is not None and active.version == 1
    assert active.config is not None and active.config["fixed"] == {"batch_job": 20}
    await budget.activate_pricing(2)
    got = await budget.get_pricing()
    assert got is not None and got.version == 2 and got.active
    old = await budget.get_pricing(1)
    assert old is not None and not old.active
    with pytest.raises(InvalidArgumentError):
        await budget.activate_pricing(3)
    with pytest.raises(InvalidArgumentError):
        await budget.get_pricing(7)


async def test_a_book_that_does_not_load_stores_nothing(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget()
    bad = {"version": 1, "models": {"_default": "__import__('os').system('x')"}}
    with pytest.raises(PricingConfigError):
        await budget.publish_pricing(bad)
    assert await budget.redis.get(budget.keys.price_next) is None
    assert await budget.list_pricing() == []


@pytest.mark.parametrize(
    ("book", "label", "error"),
    [
        # valid JSON text (an escape), but no UTF-8: Postgres refuses it, so
        # the flusher's mirror of the version failed on every run after
        ('{"models": {"\\udcff": "input_tokens"}}', None, PricingConfigError),
        (
            '{"models": {"m": "1"}, "fixed": {"job\\udcff": 1}}',
            None,
            PricingConfigError,
        ),
        (
            '{"models": {"m": "1"}, "plans": {"p": {"id": "p", "features": '
            '{"f": "\\udcff"}}}}',
            None,
            PricingConfigError,
        ),
        ('{"models": {"m": "1"}}', "deploy-\udcff", InvalidArgumentError),
    ],
    ids=["model", "job", "feature-value", "label"],
)
async def test_text_that_is_not_utf8_is_refused_and_stores_nothing(
    make_budget: MakeBudget, book: str, label: str | None, error: type[Exception]
) -> None:
    budget = make_budget()
    with pytest.raises(error, match="UTF-8"):
        await budget.publish_pricing(json.loads(book), label=label)
    assert await budget.list_pricing() == []


async def test_deduct_prices_with_the_active_book(make_budget: MakeBudget) -> None:
    budget = make_budget()
    await budget.add_credits("ada", "10")
    version = await budget.publish_pricing(BOOK)
    result = await budget.deduct("ada", USAGE, idempotency_key="call-1")
    assert (result.amount, result.price_version) == (PRICE, version)
    assert result.breakdown is not None and result.breakdown.total == PRICE
    assert result.balance_after == Decimal(10) - PRICE
    fields = (await stream_entries(budget))[-1][1]
    assert fields[b"pv"] == str(version).encode()
    meta = json.loads(fields[b"md"])
    assert meta["pricing"]["version"] == version
    assert Decimal(meta["pricing"]["tools"]) == Decimal("0.01")
    assert meta["usage"] == {"input_tokens": 1000, "output_tokens": 200}

    with pytest.raises(InsufficientCreditsError):
        await budget.deduct_fixed("ada", "batch_job")  # 20 > what is left
    await budget.add_credits("ada", "100")
    fixed = await budget.deduct_fixed("ada", "batch_job")
    assert fixed.amount == Decimal(20) and fixed.price_version == version
    assert fixed.balance_after == Decimal(90) - PRICE


async def test_an_activation_prices_the_next_deduct_of_another_manager(
    make_budget: MakeBudget,
) -> None:
    writer = make_budget()
    reader = make_budget()
    await reader.add_credits("ada", "10")
    await writer.publish_pricing(BOOK)
    first = await reader.deduct("ada", USAGE)
    assert first.amount == PRICE
    v2 = await writer.publish_pricing(_doubled(BOOK))
    # reader's cached version is a moment old: its script sees the change
    second = await reader.deduct("ada", USAGE)
    assert second.price_version == v2
    assert second.amount == PRICE + Decimal("0.0045")


async def test_a_deduct_replayed_after_an_activation_answers_the_first_charge(
    make_budget: MakeBudget,
) -> None:
    """An idempotency key names the caller's call, not the price it came to:
    a retry after another version was activated is a replay of the first
    charge (its price and version), never a conflict nor a second charge."""
    budget = make_budget()
    await budget.add_credits("ada", "30")
    v1 = await budget.publish_pricing(BOOK)
    first = await budget.deduct("ada", USAGE, idempotency_key="own")
    fixed = await budget.deduct_fixed("ada", "batch_job", idempotency_key="job")
    await budget.publish_pricing(_doubled(BOOK))
    again = await budget.deduct("ada", USAGE, idempotency_key="own")
    assert again.replayed and (again.entry_id, again.amount) == (first.entry_id, PRICE)
    assert again.price_version == v1
    again = await budget.deduct_fixed("ada", "batch_job", idempotency_key="job")
    assert again.replayed and again.entry_id == fixed.entry_id
    assert (await budget.get_balance("ada")).total == Decimal(10) - PRICE


async def test_a_team_deduct_replayed_after_an_activation_answers_the_first(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget()
    await budget.create_team("eng", initial_balance=10)
    await budget.add_team_member("eng", "ada")
    v1 = await budget.publish_pricing(BOOK)
    first = await budget.deduct("ada", USAGE, team_id="eng", idempotency_key="pool")
    await budget.publish_pricing(_doubled(BOOK))
    again = await budget.deduct("ada", USAGE, team_id="eng", idempotency_key="pool")
    assert again.replayed and (again.entry_id, again.amount) == (first.entry_id, PRICE)
    assert again.price_version == v1
    assert (await budget.get_team("eng")).balance == Decimal(10) - PRICE


async def test_budget_pricing_follows_the_book_another_manager_activates(
    make_budget: MakeBudget, monkeypatch: pytest.MonkeyPatch
) -> None:
    """coreason's ``budget.pricing.calculate`` prices by the active book on
    every instance, not only on the one that published it or ran a deduct:
    the book is read when ``budget.pricing`` is first used, then every
    REFRESH_SECONDS, and an activation elsewhere (a rollback too) reaches it;
    closing the manager stops the reading."""
    monkeypatch.setattr(pricebooks, "REFRESH_SECONDS", 0.05)
    prices = {"m": {"input_cost_per_token": "1", "output_cost_per_token": "1"}}
    writer = make_budget(model_price_overrides=prices)
    reader = make_budget(model_price_overrides=prices)

    async def priced(expected: Decimal) -> Decimal:
        # (well within a few REFRESH_SECONDS; a cluster's first read connects)
        for _ in range(200):
            found = reader.pricing.calculate("m", 10, 0)
            if found == expected:
                break
            await asyncio.sleep(0.025)
        return found

    v1 = await writer.publish_pricing({"models": {"_default": "input_tokens * 0.5"}})
    assert await priced(Decimal(5)) == Decimal(5)
    await writer.publish_pricing({"models": {"_default": "input_tokens * 0.25"}})
    assert await priced(Decimal("2.5")) == Decimal("2.5")
    await writer.activate_pricing(v1)
    assert await priced(Decimal(5)) == Decimal(5)
    reading = reader._book_reader
    await reader.aclose()
    assert reading is not None and reading.done()


def test_an_activation_reaches_another_process(key_prefix_real: str) -> None:
    """One manager activates; a manager in another process prices its next
    deduct with the new version."""
    script = f"""
import asyncio, json, sys
from spendgate import BudgetConfig, BudgetManager, UsageMetrics
async def main():
    cfg = BudgetConfig(redis_url={REDIS_URL!r}, key_prefix={key_prefix_real!r},
                       daily_user_limit=None, daily_project_limit=None,
                       daily_global_limit=None)
    async with BudgetManager(cfg) as budget:
        r = await budget.deduct("ada", UsageMetrics(model="gpt-4o", input_tokens=1000))
        print(json.dumps([r.price_version, str(r.amount)]))
asyncio.run(main())
"""

    async def publish(book: dict[str, Any]) -> int:
        from spendgate import BudgetConfig

        cfg = BudgetConfig(redis_url=REDIS_URL, key_prefix=key_prefix_real)
        async with BudgetManager(cfg) as budget:
            if book is BOOK:
                await budget.add_credits("ada", "10")
            return await budget.publish_pricing(book)

    import asyncio

    def other_process() -> list[Any]:
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return list(json.loads(done.stdout.strip().splitlines()[-1]))

    v1 = asyncio.run(publish(BOOK))
    assert other_process() == [v1, "0.0025"]
    v2 = asyncio.run(publish(_doubled(BOOK)))
    assert other_process() == [v2, "0.005"]


async def test_the_books_min_balance_is_the_floor(make_budget: MakeBudget) -> None:
    budget = make_budget()
    await budget.add_credits("ada", "10")
    await budget.publish_pricing({**BOOK, "min_balance": 5})
    with pytest.raises(InsufficientCreditsError):
        await budget.deduct_fixed("ada", "batch_job")  # 20 > 10 - 5
    ok = await budget.deduct("ada", "5")
    assert ok.balance_after == Decimal(5)
    with pytest.raises(InsufficientCreditsError):
        await budget.deduct("ada", "0.000001")


@pytest.fixture
async def key_prefix_real() -> Any:
    import uuid

    from conftest import real_redis_available, service_missing

    reason = real_redis_available()
    if reason is not None:
        service_missing("Redis", reason)
    prefix = f"sgbook{uuid.uuid4().hex[:8]}"
    yield prefix
    client = aioredis.Redis.from_url(REDIS_URL)
    keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.mark.postgres
async def test_the_flusher_mirrors_versions_and_rows_name_theirs(
    make_budget: MakeBudget, redis_client: aioredis.Redis, ledger_dsn: str
) -> None:
    from spendgate import Flusher

    budget = make_budget(postgres_dsn=ledger_dsn)
    await budget.add_credits("ada", "10")
    version = await budget.publish_pricing(BOOK, label="deploy-42")
    charged = await budget.deduct("ada", USAGE)
    flusher = Flusher(budget.config, redis=redis_client)
    try:
        await flusher.run_once()
        await flusher.run_once()  # nothing new: the mirror copies nothing again
    finally:
        await flusher.aclose()
    conn = await asyncpg.connect(ledger_dsn)
    try:
        books = await conn.fetch("SELECT * FROM spendgate_price_books")
        row = await conn.fetchrow(
            "SELECT price_version, amount FROM spendgate_ledger WHERE entry_id = $1",
            charged.entry_id,
        )
    finally:
        await conn.close()
    assert [(b["version"], b["label"]) for b in books] == [(version, "deploy-42")]
    assert json.loads(books[0]["config"])["fixed"] == {"batch_job": 20}
    assert row is not None and row["price_version"] == version
    assert row["amount"] == PRICE
