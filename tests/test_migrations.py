"""The shipped migrations build the ledger schema, once, however often they run.

How: each test gets a fresh database (``pg_fixtures.pg_dsn``) on the real
PostgreSQL; the runner is applied once, again, and by several callers at the
same moment, and the catalog is read back (columns, types, indexes, the
version table). ``spendgate migrate`` is run as a process with
``SPENDGATE_POSTGRES_DSN``, and without it, and against a closed port; the
``DATABASE_URL`` fallback is read from a given environment.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncpg
import pytest

from redis_server import free_port
from spendgate import BudgetConfig
from spendgate.ledger.migrations import VERSION_TABLE, available, migrate, migrate_dsn
from spendgate.ledger.pg import database_url

# pg_dsn
pytest_plugins = ("pg_fixtures",)
pytestmark = pytest.mark.postgres


def test_migrations_are_shipped_in_the_package() -> None:
    shipped = available()
    assert [m.version for m in shipped] == sorted({m.version for m in shipped})
    assert shipped[0].version == 1
    assert "CREATE TABLE IF NOT EXISTS spendgate_ledger" in shipped[0].sql


async def test_migrate_builds_the_ledger_table_once(pg_dsn: str) -> None:
    applied = await migrate_dsn(pg_dsn)
    assert [m.version for m in applied] == [m.version for m in available()]
    assert await migrate_dsn(pg_dsn) == []  # idempotent

    conn = await asyncpg.connect(pg_dsn)
    try:
        columns = {
            r["column_name"]: r
            for r in await conn.fetch(
                "SELECT column_name, data_type, numeric_precision, numeric_scale,"
                " is_nullable FROM information_schema.columns"
                " WHERE table_name = 'spendgate_ledger'"
            )
        }
        versions = await conn.fetch(f"SELECT version, name FROM {VERSION_TABLE}")
        indexes = {
            r["indexname"]
            for r in await conn.fetch(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'spendgate_ledger'"
            )
        }
        unique = await conn.fetchval(
            "SELECT count(*) FROM pg_index i JOIN pg_attribute a"
            " ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
            " WHERE i.indrelid = 'spendgate_ledger'::regclass AND i.indisunique"
            " AND a.attname = 'entry_id'"
        )
    finally:
        await conn.close()
    for name in ("entry_id", "kind", "user_id", "project_id", "model"):
        assert columns[name]["data_type"] == "text"
    assert columns["occurred_at"]["data_type"] == "timestamp with time zone"
    assert columns["metadata"]["data_type"] == "jsonb"
    amount = columns["amount"]
    assert (
        amount["data_type"],
        amount["numeric_precision"],
        amount["numeric_scale"],
    ) == (
        "numeric",
        20,
        6,
    )
    assert columns["amount"]["is_nullable"] == "NO"
    assert {"input_tokens", "output_tokens", "lease_id", "late"} <= set(columns)
    assert unique == 1
    assert {
        "spendgate_ledger_occurred_at_idx",
        "spendgate_ledger_user_idx",
        "spendgate_ledger_project_idx",
    } <= indexes
    assert [(r["version"], r["name"]) for r in versions] == [
        (m.version, m.name) for m in available()
    ]


async def test_concurrent_runners_apply_each_version_once(pg_dsn: str) -> None:
    conns = [await asyncpg.connect(pg_dsn) for _ in range(6)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        count = await conns[0].fetchval(f"SELECT count(*) FROM {VERSION_TABLE}")
    finally:
        for c in conns:
            await c.close()
    assert sum(len(r) for r in results) == len(available())
    assert count == len(available())


def _cli(
    *args: str, dsn: str | None, **more_env: str
) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SPENDGATE_") and k != "DATABASE_URL"
    }
    if dsn is not None:
        env["SPENDGATE_POSTGRES_DSN"] = dsn
    env.update(more_env)
    return subprocess.run(
        [sys.executable, "-m", "spendgate.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_migrate(pg_dsn: str) -> None:
    first = _cli("migrate", dsn=pg_dsn)
    assert first.returncode == 0, first.stderr
    assert "applied 0001_ledger" in first.stdout
    assert "up to date" in first.stdout
    again = _cli("migrate", dsn=pg_dsn)
    assert again.returncode == 0, again.stderr
    assert "applied" not in again.stdout.replace("0 applied now", "")
    assert "up to date" in again.stdout

    missing = _cli("migrate", dsn=None)
    assert missing.returncode == 2
    assert "SPENDGATE_POSTGRES_DSN" in missing.stderr

    down = _cli("migrate", dsn=f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    assert down.returncode == 4
    assert "unavailable" in down.stderr


async def test_database_url_is_the_fallback_of_spendgate_postgres_dsn(
    pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = "postgresql://elsewhere/db"
    assert database_url({"DATABASE_URL": pg_dsn}) == pg_dsn
    both = {"DATABASE_URL": pg_dsn, "SPENDGATE_POSTGRES_DSN": other}
    assert database_url(both) is None  # SPENDGATE_POSTGRES_DSN wins
    blank = {"DATABASE_URL": pg_dsn, "SPENDGATE_POSTGRES_DSN": " "}
    assert database_url(blank) == pg_dsn
    assert database_url({"DATABASE_URL": " "}) is None
    assert database_url({}) is None
    monkeypatch.setenv("DATABASE_URL", pg_dsn)
    found = database_url()
    assert found == pg_dsn
    assert [m.name for m in await migrate_dsn(found)] == [m.name for m in available()]
    # The budget's own settings do not read it: an application's DATABASE_URL
    # must not uncap the stream as a configured ledger does.
    config = BudgetConfig()
    assert config.postgres_dsn is None and config.effective_ledger_maxlen > 0


def test_cli_migrate_reads_database_url(pg_dsn: str) -> None:
    done = _cli("migrate", dsn=None, DATABASE_URL=pg_dsn)
    assert done.returncode == 0, done.stderr
    assert "applied 0001_ledger" in done.stdout
    # SPENDGATE_POSTGRES_DSN wins over it.
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/x"
    down = _cli("migrate", dsn=closed, DATABASE_URL=pg_dsn)
    assert down.returncode == 4
