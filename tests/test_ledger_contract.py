"""The ledger's three sides agree: the Lua scripts, the flusher, the table.

How: the ``ledger_append`` calls of ``lua/*.lua`` are read as text (their
arguments are name/value pairs; the names are ``F_<COLUMN>`` constants and
the kinds ``KIND_<NAME>`` constants, both mapped through
``protocol.lua_constants()``), the ``spendgate_ledger`` table is read from the
migrations' SQL and from a migrated database, and the flusher's side is
checked by what it does: an entry carrying every field of
``protocol.LEDGER_FIELDS`` is turned into a staging row and a Python row and
each value is found in its column, and the SQL it runs names each one. Then
every fact operation runs on the store and its stream entries are checked
against the protocol. A field added on one side only fails here.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from conftest import FakeClock, MakeBudget
from spendgate.core.keys import Keys
from spendgate.core.protocol import (
    LEDGER_FIELDS,
    SPEND_KINDS,
    LedgerKind,
    lua_constants,
)
from spendgate.core.scripts import lua_dir
from spendgate.ledger import entries, sql
from spendgate.ledger.entries import COLUMNS, ROW_COLUMNS, STAGING_COLUMNS, ColumnType
from spendgate.ledger.migrations import available

# ledger_dsn
pytest_plugins = ("pg_fixtures",)

#: columns the database fills itself
DATABASE_COLUMNS = {"inserted_at"}
#: kinds and fields of the protocol that no script of this tree writes yet:
#: teams (the teams work).
#: ``credit`` stays a kind once ``add_credits`` writes ``grant``: older rows
#: have it. Whatever is written must be known; only these may be unwritten.
NOT_WRITTEN_YET_KINDS = {"credit"}
NOT_WRITTEN_YET_FIELDS: set[str] = set()
#: words that open a table constraint, not a column, in CREATE TABLE
_TABLE_CONSTRAINTS = {"PRIMARY", "UNIQUE", "CHECK", "CONSTRAINT", "FOREIGN", "EXCLUDE"}


# -- reading the Lua -------------------------------------------------------------


def _split_args(text: str) -> list[str]:
    """Top-level comma-separated arguments of a Lua call (parentheses,
    brackets and strings respected)."""
    args: list[str] = []
    depth, quote, current = 0, "", ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif char == "," and depth == 0:
            args.append(current.strip())
            current = ""
            continue
        current += char
    if current.strip():
        args.append(current.strip())
    return args


def ledger_appends() -> dict[str, list[list[tuple[str, str]]]]:
    """Every ``ledger_append(...)`` call outside ``_records.lua``, per script:
    its (name, value) pairs, as written."""
    found: dict[str, list[list[tuple[str, str]]]] = {}
    for path in sorted(lua_dir().glob("*.lua")):
        if path.name == "_records.lua":
            continue
        source = re.sub(r"--[^\n]*", "", path.read_text("utf-8"))
        for match in re.finditer(r"\bledger_append\s*\(", source):
            depth, end = 1, match.end()
            while depth:
                depth += {"(": 1, ")": -1}.get(source[end], 0)
                end += 1
            args = _split_args(source[match.end() : end - 1])
            assert len(args) % 2 == 0, f"{path.name}: odd ledger_append arguments"
            pairs = list(zip(args[::2], args[1::2], strict=True))
            found.setdefault(path.stem, []).append(pairs)
    return found


def test_the_lua_side_is_found() -> None:
    calls = ledger_appends()
    # The fact operations and deduct each append one entry (a refund's, the
    # refunds' helpers): this test reads something.
    assert set(calls) >= {"record", "settle", "credit", "deduct", "_refunds"}
    # (the grants' helpers write the expiries: of a grant, of a refund's part)
    assert all(len(c) == 1 for name, c in calls.items() if name != "_grants")
    assert len(calls["_grants"]) == 2


def test_every_field_a_script_writes_is_a_protocol_field() -> None:
    constants = lua_constants()
    names = {field.name for field in LEDGER_FIELDS}
    for script, calls in ledger_appends().items():
        for pairs in calls:
            written = [name for name, _ in pairs]
            assert all(re.fullmatch(r"F_[A-Z_]+", n) for n in written), (
                f"{script}.lua writes a field not named by an F_ constant: {written}"
            )
            unknown = [n for n in written if n not in constants]
            assert not unknown, f"{script}.lua writes unknown fields {unknown}"
            assert len(set(written)) == len(written), f"{script}.lua: a field twice"
            assert {constants[n] for n in written} <= names
            required = {f.name for f in LEDGER_FIELDS if f.required}
            missing = required - {constants[n] for n in written}
            assert not missing, f"{script}.lua omits required fields {missing}"


def test_every_protocol_field_is_written_by_some_script() -> None:
    constants = lua_constants()
    written = {
        constants[name]
        for calls in ledger_appends().values()
        for pairs in calls
        for name, _ in pairs
    }
    every = {field.name for field in LEDGER_FIELDS}
    assert written <= every
    unwritten = {f.column for f in LEDGER_FIELDS if f.name not in written}
    assert unwritten <= NOT_WRITTEN_YET_FIELDS


def test_every_kind_a_script_writes_is_known_and_each_is_written() -> None:
    constants = lua_constants()
    kinds: set[str] = set()
    for script, calls in ledger_appends().items():
        for pairs in calls:
            value = dict(pairs)["F_KIND"]
            assert re.fullmatch(r"KIND_[A-Z_]+", value), f"{script}.lua: {value}"
            assert value in constants, f"{script}.lua writes unknown kind {value}"
            kinds.add(str(constants[value]))
    assert kinds <= {str(kind) for kind in LedgerKind}
    assert {str(kind) for kind in LedgerKind} - kinds <= NOT_WRITTEN_YET_KINDS
    assert set(SPEND_KINDS) <= set(LedgerKind)


# -- the table -------------------------------------------------------------------


def migration_columns() -> list[str]:
    """The columns of ``spendgate_ledger`` as the migrations create them."""
    shipped = available()
    create = re.search(
        r"CREATE TABLE IF NOT EXISTS spendgate_ledger \((.*?)\n\);",
        shipped[0].sql,
        re.S,
    )
    assert create, "0001 creates spendgate_ledger"
    body = re.sub(r"--[^\n]*", "", create.group(1))
    words = [line.split()[0] for line in body.splitlines() if line.strip()]
    columns = [w for w in words if w not in _TABLE_CONSTRAINTS]
    for later in shipped[1:]:
        columns += re.findall(
            r'ALTER TABLE\s+spendgate_ledger\s+ADD COLUMN(?: IF NOT EXISTS)?\s+"?(\w+)',
            later.sql,
            re.I,
        )
    return columns


def test_every_protocol_column_is_in_the_migration() -> None:
    columns = migration_columns()
    assert "entry_id" in columns and "inserted_at" in columns
    for field in LEDGER_FIELDS:
        assert field.column in columns, f"{field.column} is not in the migration"


def test_the_flusher_fills_every_column_of_the_table_in_its_order() -> None:
    columns = [c for c in migration_columns() if c not in DATABASE_COLUMNS]
    assert list(ROW_COLUMNS) == columns


async def test_the_migrated_table_has_the_flushers_columns(ledger_dsn: str) -> None:
    conn = await asyncpg.connect(ledger_dsn)
    try:
        rows = await conn.fetch(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = 'spendgate_ledger' ORDER BY ordinal_position"
        )
        await conn.execute(sql.CREATE_STAGING)
        staging = await conn.fetch(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = $1 ORDER BY ordinal_position",
            sql.STAGING_TABLE,
        )
    finally:
        await conn.close()
    # (in the migrations' order: a later one's columns come after inserted_at)
    assert [r["column_name"] for r in rows] == migration_columns()
    assert set(migration_columns()) == {*ROW_COLUMNS, *DATABASE_COLUMNS}
    assert tuple(r["column_name"] for r in staging) == STAGING_COLUMNS


# -- the flusher -----------------------------------------------------------------


def _every_field() -> tuple[dict[bytes, bytes], dict[str, Any]]:
    """An entry with every protocol field set to a value of its own, and the
    value each column must get from it."""
    fields: dict[bytes, bytes] = {}
    expected: dict[str, Any] = {}
    for position, field in enumerate(LEDGER_FIELDS, start=10):
        kind = COLUMNS[field.column]
        if kind in (ColumnType.MILLIS, ColumnType.MICROS, ColumnType.INTEGER):
            raw: bytes = str(position).encode()
            expected[field.column] = position
        elif kind is ColumnType.FLAG:
            raw, expected[field.column] = b"1", True
        elif kind is ColumnType.JSON:
            raw = b'{"input_tokens": 3, "usage": {"completion_tokens": 4}}'
            expected[field.column] = raw
        else:
            raw = f"{field.column}-value".encode()
            expected[field.column] = raw
        fields[field.name.encode()] = raw
    return fields, expected


def test_the_staging_row_reads_every_field() -> None:
    fields, expected = _every_field()
    row = entries.raw_row(fields)
    assert len(row) == len(STAGING_COLUMNS) == len(LEDGER_FIELDS)
    for field in LEDGER_FIELDS:
        assert row[STAGING_COLUMNS.index(field.name)] == expected[field.column]


def test_the_python_row_puts_every_field_in_its_column() -> None:
    fields, expected = _every_field()
    row = dict(zip(ROW_COLUMNS, entries.entry_to_row(fields), strict=True))
    for field in LEDGER_FIELDS:
        value = row[field.column]
        want = expected[field.column]
        if COLUMNS[field.column] is ColumnType.MILLIS:
            assert value.timestamp() * 1000 == want
        elif isinstance(want, bytes):
            assert value == want.decode()
        else:
            assert value == want
    assert (row["input_tokens"], row["output_tokens"]) == (3, 4)


def test_the_sql_names_every_field_and_column() -> None:
    for field in LEDGER_FIELDS:
        assert re.search(rf"\b{field.name} \w+", sql.CREATE_STAGING)
        assert re.search(rf"\b{field.name}\b", sql.INSERT.split("SELECT", 1)[1])
    for statement in (sql.INSERT, sql.INSERT_ONE):
        listed = re.search(r"spendgate_ledger \(([^)]*)\)", statement)
        assert listed
        assert [c.strip('"') for c in listed.group(1).split(", ")] == list(ROW_COLUMNS)
    assert sql.INSERT_ONE.count("$") == len(ROW_COLUMNS)


# -- what the scripts actually write ---------------------------------------------


async def test_each_fact_writes_protocol_fields_only(
    make_budget: MakeBudget,
    redis_client: aioredis.Redis,
    key_prefix: str,
    clock: FakeClock,
) -> None:
    budget = make_budget()
    spent = await budget.record_spend(
        "u", 1, project_id="p", model="m", metadata={"a": 1}
    )
    lease = await budget.reserve("u", 2, project_id="p")
    await budget.settle(lease, 1, model="m", metadata={"b": 2})
    await budget.add_credits(
        "u", 3, idempotency_key="c1", expires_at=clock.now + timedelta(hours=1)
    )
    await budget.refund(spent.entry_id, "0.5", reason="wrong model")
    clock.advance(hours=2)
    assert (await budget.sweep_expired_credits()).count == 1
    written = await redis_client.xrange(Keys(key_prefix).ledger)
    assert len(written) == 5
    names = {field.name.encode() for field in LEDGER_FIELDS}
    required = {field.name.encode() for field in LEDGER_FIELDS if field.required}
    kind = next(f.name for f in LEDGER_FIELDS if f.column == "kind").encode()
    kinds = set()
    for _sid, fields in written:
        assert set(fields) <= names
        assert required <= set(fields)
        kinds.add(fields[kind].decode())
        entries.raw_row(fields)  # the flusher takes it as it is
    assert kinds == {"spend", "settle", "grant", "refund", "expire"}
