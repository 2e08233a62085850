"""Postgres fixtures of the ledger tests; load them with
``pytest_plugins = ("pg_fixtures",)`` in a test module.

``pg_dsn`` creates a uniquely named database on the machine's PostgreSQL
(``SPENDGATE_TEST_POSTGRES_DSN``, default ``127.0.0.1:5432``) and drops it
after the test; ``ledger_dsn`` is the same with the migrations applied;
``private_postgres`` is a started :class:`pg_server.PrivatePostgres`, for
tests that stop and restart the server. Under ``CI=true`` a missing server
fails the test instead of skipping it (``service_missing``).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import POSTGRES_DSN, service_missing
from pg_server import PG_BIN, PrivatePostgres


def _with_database(dsn: str, database: str) -> str:
    base, _, _ = dsn.rpartition("/")
    return f"{base}/{database}"


async def _admin_connection() -> Any:
    import asyncpg

    try:
        return await asyncpg.connect(POSTGRES_DSN, timeout=5)
    except Exception as exc:  # any failure means "not usable"
        service_missing("PostgreSQL", f"{type(exc).__name__}: {exc}")
        raise


@pytest.fixture
async def pg_dsn() -> AsyncIterator[str]:
    """A DSN of a fresh, empty database, dropped after the test."""
    admin = await _admin_connection()
    name = f"sgtest_{uuid.uuid4().hex[:12]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(POSTGRES_DSN, name)
    finally:
        # FORCE: a flusher process killed by a test may still hold a session.
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def ledger_dsn(pg_dsn: str) -> str:
    """A fresh database with the ledger schema applied."""
    from spendgate.ledger.migrations import migrate_dsn

    await migrate_dsn(pg_dsn)
    return pg_dsn


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A started private server, stopped and deleted after the test."""
    if not (PG_BIN / "pg_ctl").exists():
        service_missing("PostgreSQL binaries", f"{PG_BIN}/pg_ctl not found")
    directory = Path(tempfile.mkdtemp(prefix="sg-pg-"))
    directory.chmod(0o755)
    server = PrivatePostgres(directory)
    try:
        server.init()
        server.start()
    except (subprocess.SubprocessError, OSError) as exc:
        shutil.rmtree(directory, ignore_errors=True)
        service_missing("a private PostgreSQL", f"{type(exc).__name__}: {exc}")
    try:
        yield server
    finally:
        if server.running():
            try:
                server.stop("immediate")
            except subprocess.SubprocessError:
                pass
        shutil.rmtree(directory, ignore_errors=True)
