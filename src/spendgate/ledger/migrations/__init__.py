"""Versioned SQL migrations of the Postgres ledger, shipped in the package.

Each ``NNNN_name.sql`` file next to this module is one version, applied in
order, each in its own transaction together with its row in
``spendgate_schema_version``. Applying is idempotent: versions already
recorded are skipped, and a session-level advisory lock serialises
concurrent runners (two flushers starting at once, ``spendgate migrate`` run
twice), so each version is applied exactly once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncpg

#: the table that records which versions are applied
VERSION_TABLE = "spendgate_schema_version"
#: an arbitrary constant: the advisory lock key of the migration runner
ADVISORY_LOCK_KEY = 0x5BE2D6A7E
_FILE_PATTERN = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True)
class Migration:
    """One versioned SQL file."""

    #: the number in the file name, ascending
    version: int
    #: the rest of the file name
    name: str
    #: the SQL text
    sql: str


def available() -> list[Migration]:
    """Every migration shipped in the package, in version order."""
    found = []
    for entry in resources.files(__name__).iterdir():
        match = _FILE_PATTERN.fullmatch(entry.name)
        if match:
            found.append(
                Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8"))
            )
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions shipped: {versions}")
    return found


async def applied_versions(conn: asyncpg.Connection) -> set[int]:
    """The versions recorded in the database (empty when none ever ran)."""
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", VERSION_TABLE)
    if not exists:
        return set()
    rows = await conn.fetch(f"SELECT version FROM {VERSION_TABLE}")
    return {int(r["version"]) for r in rows}


async def migrate(conn: asyncpg.Connection) -> list[Migration]:
    """Apply the migrations the database lacks; return those applied now.

    Reads first, so a database that is up to date needs no DDL privilege.

    :param conn: an open asyncpg connection (not inside a transaction)
    """
    pending = _pending(available(), await applied_versions(conn))
    if not pending:
        return []
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    try:
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} ("
            " version integer PRIMARY KEY,"
            " name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        # Another runner may have applied some while we waited for the lock.
        pending = _pending(available(), await applied_versions(conn))
        for migration in pending:
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    f"INSERT INTO {VERSION_TABLE} (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)
    return pending


async def migrate_dsn(dsn: str, **connect_kwargs: Any) -> list[Migration]:
    """:func:`migrate` over a fresh connection to ``dsn``."""
    from spendgate.ledger.pg import connect

    conn = await connect(dsn, **connect_kwargs)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


def _pending(shipped: list[Migration], done: set[int]) -> list[Migration]:
    return [m for m in shipped if m.version not in done]
