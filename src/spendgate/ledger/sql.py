"""The flusher's SQL, derived at import from the entry schema.

The staging table holds the stream fields of
:data:`spendgate.core.protocol.LEDGER_FIELDS` as Redis holds them; the
inserts fill the columns of :data:`spendgate.ledger.entries.COLUMNS`. Built
once, as plain strings: the statements Postgres runs are the same as if they
were written by hand.
"""

from __future__ import annotations

from spendgate.core.protocol import LEDGER_FIELDS
from spendgate.ledger.entries import (
    COLUMNS,
    FIELDS,
    METADATA_COLUMN,
    ROW_COLUMNS,
    TOKEN_FIELDS,
    ColumnType,
)

#: the ledger table, created by migration 0001 (0002 adds price_version, 0003
#: the link, grant, team, scope and window columns)
LEDGER_TABLE = "spendgate_ledger"
#: the temporary table a batch is copied into
STAGING_TABLE = "spendgate_ledger_staging"

# How each column type is staged: text stays bytes (Postgres decodes it),
# integers and flags are checked in Python first.
_STAGING_TYPES = {
    ColumnType.TEXT: "bytea",
    ColumnType.JSON: "bytea",
    ColumnType.MILLIS: "bigint",
    ColumnType.MICROS: "bigint",
    ColumnType.FLAG: "boolean",
    ColumnType.INTEGER: "bigint",
}

# The metadata parsed once per row, in the subquery of INSERT.
_METADATA_JSON = "j"


def quoted(column: str) -> str:
    """A column name as SQL reads it whatever it is: quoted (``window`` is a
    reserved word in Postgres)."""
    return '"' + column.replace('"', '""') + '"'


#: the ledger's columns the inserts fill, in order, quoted
_INSERT_COLUMNS = ", ".join(quoted(column) for column in ROW_COLUMNS)


def _staging_ddl() -> str:
    columns = ", ".join(
        f"{field.name} {_STAGING_TYPES[COLUMNS[field.column]]}"
        for field in LEDGER_FIELDS
    )
    # ON COMMIT DELETE ROWS: the staging rows vanish with every commit, so a
    # failed or retried batch never sees the rows of an earlier one.
    return (
        f"CREATE TEMP TABLE IF NOT EXISTS {STAGING_TABLE} ({columns})"
        " ON COMMIT DELETE ROWS"
    )


def _token_sql(column: str) -> str:
    """The first token count found in the metadata, as bigint, or NULL."""
    names = TOKEN_FIELDS[column]
    paths = [f"{{{name}}}" for name in names]
    paths += [f"{{usage,{name}}}" for name in names]
    cases = ", ".join(
        f"CASE WHEN {_METADATA_JSON} #>> '{path}' ~ '^[0-9]{{1,18}}$'"
        f" THEN ({_METADATA_JSON} #>> '{path}')::bigint END"
        for path in paths
    )
    return f"coalesce({cases})"


def _select_sql(column: str) -> str:
    """The expression that fills ``column`` from the staging row."""
    kind = COLUMNS[column]
    if kind is ColumnType.TOKENS:
        return _token_sql(column)
    if kind is ColumnType.JSON:
        return _METADATA_JSON
    name = FIELDS[column].name
    if kind is ColumnType.TEXT:
        return f"convert_from({name}, 'UTF8')"
    if kind is ColumnType.MILLIS:
        return f"timestamptz 'epoch' + {name} * interval '1 millisecond'"
    if kind is ColumnType.MICROS:
        return f"{name} * 0.000001"  # bigint * numeric: exact
    return name


def _insert_sql() -> str:
    metadata = FIELDS[METADATA_COLUMN].name
    return (
        f"INSERT INTO {LEDGER_TABLE} ({_INSERT_COLUMNS})"
        f" SELECT {', '.join(_select_sql(c) for c in ROW_COLUMNS)}"
        f" FROM (SELECT *, convert_from({metadata}, 'UTF8')::jsonb"
        f" AS {_METADATA_JSON} FROM {STAGING_TABLE}) AS s"
        " ON CONFLICT (entry_id) DO NOTHING"
    )


def _value_sql(position: int, column: str) -> str:
    kind = COLUMNS[column]
    if kind is ColumnType.MICROS:
        return f"${position}::bigint * 0.000001"
    if kind is ColumnType.JSON:
        return f"${position}::jsonb"
    return f"${position}"


def _insert_one_sql() -> str:
    values = ", ".join(
        _value_sql(position, column)
        for position, column in enumerate(ROW_COLUMNS, start=1)
    )
    return (
        f"INSERT INTO {LEDGER_TABLE} ({_INSERT_COLUMNS})"
        f" VALUES ({values}) ON CONFLICT (entry_id) DO NOTHING"
    )


#: creates the session's staging table (the columns of
#: :data:`spendgate.ledger.entries.STAGING_COLUMNS`)
CREATE_STAGING = _staging_ddl()

#: moves the staging rows into the ledger. The conversion happens in Postgres,
#: next to the insert, not in this process: UTF-8 text from bytes
#: (convert_from refuses invalid UTF-8 and NUL; such an entry is isolated and
#: converted in Python instead), milliseconds to timestamptz, micro-units to
#: exact numeric, metadata to jsonb with the token counts.
INSERT = _insert_sql()

#: inserts one row of :func:`spendgate.ledger.entries.entry_to_row` (the slow path)
INSERT_ONE = _insert_one_sql()
