"""Migration 0003 and the flusher carry the credits half of the ledger.

How: on the real PostgreSQL, a database is built with migration 0001 only and
given rows of the old kinds; the migrations then run, every row is read back
unchanged and rows of every kind (a negative ``adjust`` among them) insert,
while a negative amount of any other kind is refused by the table. On both
Redis backends, entries of the new kinds (``grant``, ``expire``, ``refund``,
``adjust``, a team charge) are XADDed to the ledger stream as the scripts
write them and moved by the flusher: each arrives once with every new field
in its column, also when the same entries are delivered again; a negative
amount outside ``adjust`` is dead-lettered before Postgres, a charge without a
user by Postgres (only an adjust of a project or the global scope has none).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from spendgate import BudgetConfig, Flusher, PoisonEntryError
from spendgate.core.keys import Keys
from spendgate.core.protocol import FIELD, LedgerKind
from spendgate.ledger.entries import raw_row
from spendgate.ledger.migrations import VERSION_TABLE, available, migrate_dsn

# pg_dsn, ledger_dsn
pytest_plugins = ("pg_fixtures",)
pytestmark = pytest.mark.postgres

_T0 = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
_OLD_ROWS = [
    # entry_id, kind, user, project, model, amount, metadata
    ("e1", "spend", "ada", "p1", "gpt-4o", "1.250000", '{"input_tokens": 3}'),
    ("e2", "settle", "bob", None, "claude", "0.000001", None),
    ("e3", "credit", "ada", None, None, "10.000000", None),
]


async def _only_0001(dsn: str) -> None:
    """The schema as a deployment of the first release left it."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(available()[0].sql)
        await conn.execute(
            f"CREATE TABLE {VERSION_TABLE} (version integer PRIMARY KEY,"
            " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        await conn.execute(f"INSERT INTO {VERSION_TABLE} VALUES (1, 'ledger')")
        for entry, kind, user, project, model, amount, meta in _OLD_ROWS:
            await conn.execute(
                "INSERT INTO spendgate_ledger (entry_id, kind, occurred_at, user_id,"
                " project_id, model, amount, metadata, input_tokens, lease_id, late)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7::numeric, $8::jsonb, $9, $10,"
                " $11)",
                entry,
                kind,
                _T0,
                user,
                project,
                model,
                amount,
                meta,
                3 if meta else None,
                "lease-1" if kind == "settle" else None,
                kind == "settle",
            )
    finally:
        await conn.close()


async def test_0003_migrates_a_0001_table_holding_rows_in_place(pg_dsn: str) -> None:
    await _only_0001(pg_dsn)
    conn = await asyncpg.connect(pg_dsn)
    try:
        before = [
            dict(r)
            for r in await conn.fetch("SELECT * FROM spendgate_ledger ORDER BY 1")
        ]
        applied = await migrate_dsn(pg_dsn)
        assert [m.version for m in applied] == [m.version for m in available()][1:]
        after = [
            dict(r)
            for r in await conn.fetch("SELECT * FROM spendgate_ledger ORDER BY 1")
        ]
        # Every row is there, every old value unchanged, the new columns empty.
        assert len(after) == len(before) == len(_OLD_ROWS)
        for old, new in zip(before, after, strict=True):
            assert {k: new[k] for k in old} == old
            extra = set(new) - set(old)
            assert extra == {
                "price_version",
                "link_id",
                "grant_id",
                "team_id",
                "scope",
                "window",
                "allowance_used",  # (0004)
            }
            assert all(new[k] is None for k in extra)
        # New rows of every kind insert; only adjust may be negative.
        for i, kind in enumerate(LedgerKind):
            amount = "-2.5" if kind is LedgerKind.ADJUST else "2.5"
            await conn.execute(
                "INSERT INTO spendgate_ledger (entry_id, kind, occurred_at, user_id,"
                ' amount, link_id, grant_id, team_id, scope, "window")'
                " VALUES ($1, $2, $3, 'ada', $4::numeric, 'e1', 'g1', 't1', 'user',"
                " '2026-03-15')",
                f"new-{i}",
                str(kind),
                _T0,
                amount,
            )
        # a project's adjustment names no user; every other row does
        await conn.execute(
            "INSERT INTO spendgate_ledger (entry_id, kind, occurred_at, amount,"
            " project_id, scope) VALUES ('pa', 'adjust', $1, 1, 'p1', 'project')",
            _T0,
        )
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO spendgate_ledger (entry_id, kind, occurred_at, amount)"
                " VALUES ('nu', 'spend', $1, 1)",
                _T0,
            )
        for kind in ("spend", "refund", "grant", "expire"):
            with pytest.raises(asyncpg.CheckViolationError):
                await conn.execute(
                    "INSERT INTO spendgate_ledger (entry_id, kind, occurred_at,"
                    " user_id, amount) VALUES ('neg', $1, $2, 'ada', -1)",
                    kind,
                    _T0,
                )
        count = await conn.fetchval("SELECT count(*) FROM spendgate_ledger")
        indexes = {
            r["indexname"]
            for r in await conn.fetch(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'spendgate_ledger'"
            )
        }
    finally:
        await conn.close()
    assert count == len(_OLD_ROWS) + len(LedgerKind) + 1
    assert {
        "spendgate_ledger_link_idx",
        "spendgate_ledger_grant_idx",
        "spendgate_ledger_team_idx",
    } <= indexes
    assert await migrate_dsn(pg_dsn) == []


def _entry(entry: str, kind: LedgerKind, amount: int, **more: str) -> dict[str, str]:
    """A stream entry as a script writes it (fields by column name)."""
    fields = {
        "entry_id": entry,
        "kind": str(kind),
        "occurred_at": str(int(_T0.timestamp() * 1000)),
        "user_id": "ada",
        "amount": str(amount),
        "project_id": "",
        "model": "",
        "metadata": "",
        **more,
    }
    return {FIELD[column]: value for column, value in fields.items()}


#: one entry of every new kind, with the fields its writer sets
NEW_KIND_ENTRIES = [
    _entry("g-1", LedgerKind.GRANT, 5_000_000, grant_id="gr-1"),
    _entry("x-1", LedgerKind.EXPIRE, 1_500_000, grant_id="gr-1"),
    _entry(
        "r-1",
        LedgerKind.REFUND,
        250_000,
        link_id="s-1",
        project_id="p1",
        model="gpt-4o",
        metadata='{"reason": "bad answer"}',
    ),
    _entry("a-1", LedgerKind.ADJUST, -750_000, scope="user", window="2026-03-15"),
    _entry(
        "a-2",
        LedgerKind.ADJUST,
        40_000,
        user_id="",
        project_id="p1",
        scope="project",
        window="2026-03",
    ),
    _entry("s-1", LedgerKind.SPEND, 1_000_000, team_id="team-a", project_id="p1"),
    _entry("c-1", LedgerKind.CREDIT, 2_000_000),
]


async def test_the_flusher_moves_every_new_kind_and_field_exactly_once(
    redis_client: aioredis.Redis, key_prefix: str, ledger_dsn: str
) -> None:
    config = BudgetConfig(key_prefix=key_prefix, postgres_dsn=ledger_dsn)
    stream = Keys(key_prefix).ledger
    for fields in NEW_KIND_ENTRIES:
        await redis_client.xadd(stream, fields)  # type: ignore[arg-type]
    # a negative amount of a kind that is not signed never reaches Postgres,
    # nor does a charge that names no user
    await redis_client.xadd(
        stream,
        _entry("bad-1", LedgerKind.REFUND, -1, link_id="s-1"),  # type: ignore[arg-type]
    )
    await redis_client.xadd(
        stream,
        _entry("bad-2", LedgerKind.SPEND, 1, user_id=""),  # type: ignore[arg-type]
    )
    flusher = Flusher(config, redis=redis_client)
    try:
        assert await flusher.run_once() == len(NEW_KIND_ENTRIES) + 2
        # the same entries delivered again (a crash before the ack): no new row
        for fields in NEW_KIND_ENTRIES:
            await redis_client.xadd(stream, fields)  # type: ignore[arg-type]
        assert await flusher.run_once() == len(NEW_KIND_ENTRIES)
        assert await flusher.run_once() == 0
    finally:
        await flusher.aclose()
    assert flusher.inserted_total == len(NEW_KIND_ENTRIES)
    assert flusher.dead_lettered_total == 2
    rows = await _rows(ledger_dsn)
    assert set(rows) == {f[FIELD["entry_id"]] for f in NEW_KIND_ENTRIES}
    assert rows["g-1"]["kind"] == "grant" and rows["g-1"]["grant_id"] == "gr-1"
    assert rows["g-1"]["amount"] == Decimal(5)
    assert (rows["x-1"]["kind"], rows["x-1"]["amount"]) == ("expire", Decimal("1.5"))
    refund = rows["r-1"]
    assert (refund["kind"], refund["link_id"], refund["amount"]) == (
        "refund",
        "s-1",
        Decimal("0.25"),
    )
    assert (refund["project_id"], refund["model"]) == ("p1", "gpt-4o")
    down = rows["a-1"]
    assert (down["kind"], down["amount"], down["scope"], down["window"]) == (
        "adjust",
        Decimal("-0.75"),
        "user",
        "2026-03-15",
    )
    project = rows["a-2"]
    assert (project["amount"], project["window"], project["project_id"]) == (
        Decimal("0.04"),
        "2026-03",
        "p1",
    )
    assert project["user_id"] is None
    assert rows["s-1"]["team_id"] == "team-a"
    assert rows["c-1"]["kind"] == "credit"
    assert all(rows[e]["link_id"] is None for e in rows if e != "r-1")


async def _rows(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        return {
            r["entry_id"]: r for r in await conn.fetch("SELECT * FROM spendgate_ledger")
        }
    finally:
        await conn.close()


def test_only_a_signed_kind_may_carry_a_negative_amount() -> None:
    def raw(kind: LedgerKind) -> dict[bytes, bytes]:
        return {k.encode(): v.encode() for k, v in _entry("n", kind, -5).items()}

    assert raw_row(raw(LedgerKind.ADJUST))[5] == -5
    for kind in LedgerKind:
        if kind is not LedgerKind.ADJUST:
            with pytest.raises(PoisonEntryError):
                raw_row(raw(kind))
