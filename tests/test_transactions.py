"""``list_transactions``: a user's ledger entries, newest first, from the
stream without Postgres and from Postgres with it.

How: facts over three UTC days (the injected clock) go through
``BudgetManager`` on both backends, with entries of the kinds the grants
work writes (``grant``, ``expire``, ``refund``) XADDed as its scripts write
them. Without a DSN the list comes from the stream; with one, the same facts
are flushed (``Flusher``) and the list comes from Postgres: the two lists
must be the same transactions, newest first, only the user's, windowed by
``since``/``until`` and cut at ``limit``; bounds at the calendar's ends
(UTC year 0 or 10000) are the open ones. Bad limits and naive datetimes are
typed errors; a database without the schema is a configuration error, an
unreachable one "unavailable". The HTTP route and the CLI are driven too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from conftest import REDIS_URL, FakeClock, MakeBudget
from redis_server import free_port
from spendgate import (
    BudgetManager,
    ConfigurationError,
    Flusher,
    InvalidArgumentError,
    LedgerUnavailableError,
)
from spendgate.core.protocol import LedgerKind
from spendgate.corrections import Transaction
from spendgate.server import create_app

# ledger_dsn, pg_dsn
pytest_plugins = ("pg_fixtures",)

DAY1 = datetime(2026, 3, 13, 9, tzinfo=UTC)
DAY2 = datetime(2026, 3, 14, 0, tzinfo=UTC)  # exactly midnight
DAY3 = datetime(2026, 3, 15, 12, tzinfo=UTC)


async def _history(
    budget: BudgetManager, clock: FakeClock, redis: aioredis.Redis
) -> list[str]:
    """Ada's entries over three days (and others'), oldest first: their ids
    (a second apart, so that the order does not rest on entry ids)."""
    ids: list[str] = []
    clock.set(DAY1)
    ids.append((await budget.record_spend("ada", "1.5", "p1", "gpt")).entry_id)
    await budget.record_spend("bob", 9)
    clock.advance(1)
    ids.append(await _xadd(redis, budget, LedgerKind.GRANT, 10_000_000, g="gr-1"))
    clock.set(DAY2)
    lease = await budget.reserve("ada", 5, project_id="p1")
    charge = await budget.settle(lease, 2, model="claude", metadata={"n": 1})
    ids.append(charge.entry_id)
    clock.advance(1)
    ids.append(
        await _xadd(
            redis,
            budget,
            LedgerKind.REFUND,
            500_000,
            ln=charge.entry_id,
            p="p1",
            m="claude",
            w="2026-03-14",
            md='{"reason": "bad answer"}',
        )
    )
    clock.set(DAY3)
    fix = await budget.adjust_usage("user", "ada", -1, reason="fix", at=DAY2)
    ids.append(fix.entry_id)
    if budget.config.cluster_buckets == 1:
        # names no user (sharded, a project's spend is not adjusted: refused)
        await budget.adjust_usage("project", "p1", 1)
    clock.advance(1)
    ids.append(await _xadd(redis, budget, LedgerKind.EXPIRE, 3_000_000, g="gr-1"))
    clock.advance(1)
    ids.append((await budget.add_credits("ada", 4)).entry_id)
    return ids


async def _xadd(
    redis: aioredis.Redis,
    budget: BudgetManager,
    kind: LedgerKind,
    micros: int,
    **fields: str,
) -> str:
    """An entry as the grants work's scripts write it, at the clock's time."""
    assert budget._clock is not None
    at = int(budget._clock().timestamp() * 1000)
    entry = f"{kind}-{at}"
    values = {"e": entry, "k": str(kind), "t": str(at), "u": "ada", "a": str(micros)}
    ledger = budget.keys.of("ada").ledger
    await redis.xadd(ledger, {**values, **fields})  # type: ignore[arg-type]
    return entry


def _check_ada(found: list[Transaction], ids: list[str]) -> None:
    assert [t.entry_id for t in found] == ids[::-1]
    assert all(t.user_id == "ada" for t in found)
    kinds = [t.kind for t in found]
    assert kinds == ["grant", "expire", "adjust", "refund", "settle", "grant", "spend"]
    by_kind = {t.kind: t for t in found}
    refund = by_kind["refund"]
    assert refund.link_id == ids[2] and refund.amount == Decimal("0.5")
    assert (refund.project_id, refund.model, refund.window) == (
        "p1",
        "claude",
        "2026-03-14",
    )
    assert refund.metadata == {"reason": "bad answer"}
    adjust = by_kind["adjust"]
    assert (adjust.amount, adjust.scope, adjust.window) == (
        Decimal(-1),
        "user",
        "2026-03-14",
    )
    settle = by_kind["settle"]
    assert settle.lease_id is not None and settle.metadata == {"n": 1}
    assert settle.occurred_at == DAY2
    assert by_kind["grant"].grant_id == "gr-1" and by_kind["expire"].grant_id == "gr-1"
    assert by_kind["spend"].occurred_at == DAY1


async def _windows(budget: BudgetManager, ids: list[str]) -> None:
    """since/until and limit, on either source."""
    day2 = await budget.list_transactions("ada", date(2026, 3, 14), date(2026, 3, 15))
    assert [t.entry_id for t in day2] == [ids[3], ids[2]]
    since_midnight = await budget.list_transactions("ada", since=DAY2)
    assert ids[2] in {t.entry_id for t in since_midnight}
    until_midnight = await budget.list_transactions("ada", until=DAY2)
    assert [t.entry_id for t in until_midnight] == [ids[1], ids[0]]
    assert len(await budget.list_transactions("ada", limit=2)) == 2
    assert await budget.list_transactions("ada", since=DAY3, until=DAY1) == []
    assert await budget.list_transactions("nobody") == []


async def test_from_the_stream_without_postgres(
    budget: BudgetManager, clock: FakeClock, redis_client: aioredis.Redis
) -> None:
    ids = await _history(budget, clock, redis_client)
    _check_ada(await budget.list_transactions("ada"), ids)
    await _windows(budget, ids)
    bob = await budget.list_transactions("bob")
    assert [(t.kind, t.amount) for t in bob] == [("spend", Decimal(9))]


@pytest.mark.postgres
async def test_from_postgres_once_flushed(
    make_budget: MakeBudget,
    clock: FakeClock,
    redis_client: aioredis.Redis,
    ledger_dsn: str,
) -> None:
    budget = make_budget(postgres_dsn=ledger_dsn)
    ids = await _history(budget, clock, redis_client)
    # what the flusher has not moved is not in Postgres yet
    assert await budget.list_transactions("ada") == []
    flusher = Flusher(budget.config, redis=redis_client)
    try:
        await flusher.run_once()
    finally:
        await flusher.aclose()
    _check_ada(await budget.list_transactions("ada"), ids)
    await _windows(budget, ids)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"limit": 0}, InvalidArgumentError),
        ({"limit": 1001}, InvalidArgumentError),
        ({"limit": True}, InvalidArgumentError),
        ({"limit": "5"}, InvalidArgumentError),
        ({"since": datetime(2026, 3, 1)}, InvalidArgumentError),
        ({"until": "2026-03-01"}, InvalidArgumentError),
    ],
)
async def test_bad_arguments_are_typed_errors(
    budget: BudgetManager, kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        await budget.list_transactions("ada", **kwargs)


async def test_a_thousand_is_the_most_one_call_returns(budget: BudgetManager) -> None:
    for i in range(1005):
        await budget.record_spend("many", Decimal(i + 1) / 1000)
    found = await budget.list_transactions("many", limit=1000)
    assert len(found) == 1000
    assert found[0].amount == Decimal("1.005") and found[-1].amount == Decimal("0.006")


@pytest.mark.postgres
async def test_postgres_without_the_schema_or_unreachable(
    make_budget: MakeBudget, pg_dsn: str
) -> None:
    with pytest.raises(ConfigurationError, match="spendgate migrate"):
        await make_budget(postgres_dsn=pg_dsn).list_transactions("ada")
    gone = f"postgresql://postgres@127.0.0.1:{free_port()}/x"
    with pytest.raises(LedgerUnavailableError):
        await make_budget(postgres_dsn=gone).list_transactions("ada")


@pytest.mark.postgres
async def test_bounds_at_the_ends_of_the_calendar(
    make_budget: MakeBudget, ledger_dsn: str
) -> None:
    # (instants whose UTC is year 10000 or year 0: Postgres cannot hold them,
    # but every entry lies between them)
    budget = make_budget(postgres_dsn=ledger_dsn)
    late = datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-23)))
    early = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=23)))
    assert await budget.list_transactions("ada", since=early, until=late) == []
    assert await budget.list_transactions("ada", until=early) == []


# -- the edges -------------------------------------------------------------------


async def test_get_v1_transactions(
    budget: BudgetManager, clock: FakeClock, redis_client: aioredis.Redis
) -> None:
    ids = await _history(budget, clock, redis_client)
    app = create_app(budget, api_keys=["k"])
    auth = {"Authorization": "Bearer k"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as http:
        every = await http.get("/v1/transactions/ada", headers=auth)
        assert every.status_code == 200, every.text
        body = every.json()
        assert body["source"] == "stream" and body["user_id"] == "ada"
        assert [t["entry_id"] for t in body["transactions"]] == ids[::-1]
        adjust = body["transactions"][2]
        assert (adjust["kind"], adjust["amount"], adjust["scope"]) == (
            "adjust",
            "-1",
            "user",
        )
        day2 = await http.get(
            "/v1/transactions/ada",
            params={"since": "2026-03-14", "until": "2026-03-15T00:00:00", "limit": 1},
            headers=auth,
        )
        assert [t["entry_id"] for t in day2.json()["transactions"]] == [ids[3]]
        for params in ({"limit": 0}, {"limit": 1001}, {"since": "soon"}):
            bad = await http.get("/v1/transactions/ada", params=params, headers=auth)
            assert bad.status_code == 422, (params, bad.text)
        assert (await http.get("/v1/transactions/ada")).status_code == 401


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SPENDGATE_")}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "spendgate.cli", "transactions", *args],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["redis"], indirect=True)
async def test_cli_transactions(
    make_budget: MakeBudget,
    clock: FakeClock,
    redis_client: aioredis.Redis,
    key_prefix: str,
    ledger_dsn: str,
) -> None:
    budget = make_budget()
    ids = await _history(budget, clock, redis_client)
    env = {"SPENDGATE_REDIS_URL": REDIS_URL, "SPENDGATE_KEY_PREFIX": key_prefix}
    listed = _cli("ada", "--json", **env)
    assert listed.returncode == 0, listed.stderr
    body = json.loads(listed.stdout)
    assert body["source"] == "stream"
    assert [t["entry_id"] for t in body["transactions"]] == ids[::-1]
    table = _cli("ada", "--until", "2026-03-15", "--limit", "2", **env)
    assert table.returncode == 0, table.stderr
    assert "from the stream" in table.stdout and "refund" in table.stdout
    assert _cli("ada", "--limit", "5000", **env).returncode == 2
    assert _cli("ada").returncode == 2  # neither Postgres nor Redis configured
    flusher = Flusher(make_budget(postgres_dsn=ledger_dsn).config, redis=redis_client)
    try:
        await flusher.run_once()
    finally:
        await flusher.aclose()
    from_pg = _cli("ada", "--json", SPENDGATE_POSTGRES_DSN=ledger_dsn)
    assert from_pg.returncode == 0, from_pg.stderr
    assert json.loads(from_pg.stdout)["source"] == "postgres"
    assert len(json.loads(from_pg.stdout)["transactions"]) == len(ids)
    gone = f"postgresql://postgres@127.0.0.1:{free_port()}/x"
    assert _cli("ada", SPENDGATE_POSTGRES_DSN=gone).returncode == 4
