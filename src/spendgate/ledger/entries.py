"""The ledger entry schema: a stream entry's fields, and the rows they become.

The fields a script writes to the ledger stream are
:data:`spendgate.core.protocol.LEDGER_FIELDS` (stream name, column,
required). This module adds what only the Postgres side needs, the type of
each ``spendgate_ledger`` column (:data:`COLUMNS`), checks at import that the
two name exactly the same fields, and derives from them the staging row of
the fast path (:func:`raw_row`) and the Python row of the slow path
(:func:`entry_to_row`). :mod:`spendgate.ledger.sql` derives the SQL from the
same tables, so a field added on one side only fails at import.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from enum import Enum
from operator import itemgetter
from typing import Any

from spendgate.core import protocol
from spendgate.core.protocol import LEDGER_FIELDS, LedgerField
from spendgate.core.windows import EPOCH
from spendgate.errors import PoisonEntryError

#: an entry's fields as Redis returns them
RawFields = dict[bytes, bytes]
#: a stream id and its fields (``None``: the entry was trimmed meanwhile)
StreamEntry = tuple[str, RawFields | None]


class ColumnType(Enum):
    """What a ``spendgate_ledger`` column holds, and so how it is converted."""

    #: UTF-8 text (``text``)
    TEXT = "text"
    #: milliseconds since the epoch in the stream (``timestamptz``)
    MILLIS = "millis"
    #: integer micro-units in the stream (exact ``numeric``)
    MICROS = "micros"
    #: a JSON object (``jsonb``); the token columns are read from it
    JSON = "json"
    #: ``"1"`` for true in the stream (``boolean``)
    FLAG = "flag"
    #: a token count read from the metadata, not a stream field (``bigint``)
    TOKENS = "tokens"
    #: a whole number in the stream (``integer``)
    INTEGER = "integer"


#: the ``spendgate_ledger`` columns the flusher fills, in the table's order
#: (migrations 0001 to 0004), and their types. Every column but the token
#: counts is a stream field of :data:`LEDGER_FIELDS`; checked below.
COLUMNS: dict[str, ColumnType] = {
    "entry_id": ColumnType.TEXT,
    "kind": ColumnType.TEXT,
    "occurred_at": ColumnType.MILLIS,
    "user_id": ColumnType.TEXT,
    "project_id": ColumnType.TEXT,
    "model": ColumnType.TEXT,
    "amount": ColumnType.MICROS,
    "metadata": ColumnType.JSON,
    "input_tokens": ColumnType.TOKENS,
    "output_tokens": ColumnType.TOKENS,
    "idempotency_key": ColumnType.TEXT,
    "lease_id": ColumnType.TEXT,
    "estimate": ColumnType.MICROS,
    "late": ColumnType.FLAG,
    # migration 0002
    "price_version": ColumnType.INTEGER,
    # migration 0003
    "link_id": ColumnType.TEXT,
    "grant_id": ColumnType.TEXT,
    "team_id": ColumnType.TEXT,
    "scope": ColumnType.TEXT,
    "window": ColumnType.TEXT,
    # migration 0004
    "allowance_used": ColumnType.MICROS,
}

#: metadata keys read as token counts, top level or under "usage", first found
TOKEN_FIELDS: dict[str, tuple[str, ...]] = {
    "input_tokens": ("input_tokens", "prompt_tokens"),
    "output_tokens": ("output_tokens", "completion_tokens"),
}

#: the stream fields, by column
FIELDS: dict[str, LedgerField] = {field.column: field for field in LEDGER_FIELDS}
#: the staging table's columns: the entry's fields as Redis holds them (bytes;
#: the integers already checked in Python), in the order of :func:`raw_row`
STAGING_COLUMNS = tuple(field.name for field in LEDGER_FIELDS)
#: the columns of the rows of :func:`entry_to_row`, in order
ROW_COLUMNS = tuple(COLUMNS)
#: the one column that holds the metadata
METADATA_COLUMN = next(c for c, t in COLUMNS.items() if t is ColumnType.JSON)
#: the column whose negative value makes an entry malformed, unless the
#: entry's kind is signed (:data:`spendgate.core.protocol.SIGNED_KINDS`)
AMOUNT_COLUMN = "amount"
#: the kinds whose amount may be negative, as Redis holds them
SIGNED_KINDS = frozenset(str(kind).encode() for kind in protocol.SIGNED_KINDS)

_MAX_BIGINT = 2**63 - 1


def _check_schema() -> None:
    """Fail at import when the protocol and the column types disagree."""
    stored = {c for c, t in COLUMNS.items() if t is not ColumnType.TOKENS}
    if stored != set(FIELDS) or len(FIELDS) != len(LEDGER_FIELDS):
        raise RuntimeError(
            "ledger fields and columns disagree: protocol.LEDGER_FIELDS has "
            f"{sorted(FIELDS)}, ledger.entries.COLUMNS stores {sorted(stored)}"
        )
    tokens = {c for c, t in COLUMNS.items() if t is ColumnType.TOKENS}
    json_columns = [c for c, t in COLUMNS.items() if t is ColumnType.JSON]
    if tokens != set(TOKEN_FIELDS) or len(json_columns) != 1:
        raise RuntimeError("token columns need one metadata column and TOKEN_FIELDS")
    if not all(FIELDS[c].required for c in ("entry_id", "kind", AMOUNT_COLUMN)):
        # the insert's conflict key, the fact itself, and the kind its sign reads
        raise RuntimeError("the entry id, kind and amount are required ledger fields")


_check_schema()

# The fast path's plan, by staging position: which fields are integers, which
# are flags, which must be there (and not empty).
_NAMES = tuple(name.encode() for name in STAGING_COLUMNS)
_TYPES = tuple(COLUMNS[field.column] for field in LEDGER_FIELDS)
_INTEGERS = tuple(
    i
    for i, t in enumerate(_TYPES)
    if t in (ColumnType.MILLIS, ColumnType.MICROS, ColumnType.INTEGER)
)
_FLAGS = tuple(i for i, t in enumerate(_TYPES) if t is ColumnType.FLAG)
_REQUIRED = tuple(i for i, field in enumerate(LEDGER_FIELDS) if field.required)
_required_values = itemgetter(*_REQUIRED)
_AMOUNT = STAGING_COLUMNS.index(FIELDS[AMOUNT_COLUMN].name)
_KIND = STAGING_COLUMNS.index(FIELDS["kind"].name)


def clean_text(value: bytes | str) -> str:
    """Text as Postgres can store it: decoded UTF-8, NUL replaced by U+FFFD
    (Postgres text cannot hold NUL; ids may, they are opaque)."""
    if isinstance(value, bytes):
        return _text(value)
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def _text(raw: bytes) -> str:
    if b"\x00" in raw:
        raw = raw.replace(b"\x00", "\ufffd".encode())
    return raw.decode("utf-8", "replace")


def _malformed(fields: RawFields, exc: Exception | None = None) -> PoisonEntryError:
    if exc is None:
        return PoisonEntryError(f"malformed ledger entry: {fields!r}")
    return PoisonEntryError(f"malformed ledger entry ({exc!r}): {fields!r}")


def raw_row(fields: RawFields) -> tuple[Any, ...]:
    """The staging row of one stream entry (see :data:`STAGING_COLUMNS`): the
    fast path, bytes as they are (an empty optional field is ``None``),
    integers checked, flags as booleans.

    :param fields: the entry's fields as Redis returns them (bytes)
    :raise PoisonEntryError: when a required field is missing, empty or
        malformed, or the amount is negative (but for a signed kind)
    """
    get = fields.get
    row: list[Any] = [get(name) or None for name in _NAMES]
    if None in _required_values(row):
        raise _missing(fields, row)
    try:
        for i in _INTEGERS:
            if row[i] is not None:
                row[i] = int(row[i])
    except ValueError as exc:
        raise _malformed(fields, exc) from None
    for i in _FLAGS:
        row[i] = row[i] == b"1"
    if row[_AMOUNT] < 0 and row[_KIND] not in SIGNED_KINDS:
        raise _malformed(fields)
    return tuple(row)


def _missing(fields: RawFields, row: list[Any]) -> PoisonEntryError:
    """The error for a required field that is missing or empty."""
    name = next(_NAMES[i] for i in _REQUIRED if row[i] is None)
    return _malformed(fields, None if name in fields else KeyError(name))


def _tokens(meta: Any, names: Sequence[str]) -> int | None:
    if not isinstance(meta, dict):
        return None
    sources = [meta]
    if isinstance(meta.get("usage"), dict):
        sources.append(meta["usage"])
    for source in sources:
        for name in names:
            value = source.get(name)
            if type(value) is int and 0 <= value <= _MAX_BIGINT:
                return value
    return None


def _metadata(raw: bytes) -> tuple[str, Any]:
    """The metadata as jsonb accepts it, and parsed (for the token counts);
    text that is not JSON is kept as ``{"_unparsed": text}``."""
    if b"\\u0000" in raw:
        # jsonb refuses the NUL escape that json.dumps writes for "\x00".
        raw = raw.replace(b"\\u0000", b"\\ufffd")
    metadata = _text(raw)
    try:
        return metadata, json.loads(metadata)
    except ValueError:
        meta = {"_unparsed": metadata}
        return json.dumps(meta), meta


def entry_to_row(fields: RawFields) -> tuple[Any, ...]:
    """One stream entry converted in Python, in the order of
    :data:`ROW_COLUMNS` (for :data:`spendgate.ledger.sql.INSERT_ONE`): the
    slow path, for an entry Postgres refused in bulk. Text is cleaned (NUL
    replaced), and metadata that is not JSON is kept as ``{"_unparsed": text}``.
    Times are datetimes; amounts stay integer micro-units (SQL scales them).

    :param fields: the entry's fields as Redis returns them (bytes)
    :raise PoisonEntryError: when a required field is missing or malformed
    """
    staged = dict(zip(STAGING_COLUMNS, raw_row(fields), strict=True))
    meta: Any = None
    raw_metadata = staged[FIELDS[METADATA_COLUMN].name]
    metadata = None
    if raw_metadata:
        metadata, meta = _metadata(raw_metadata)
    row: list[Any] = []
    for column, kind in COLUMNS.items():
        if kind is ColumnType.TOKENS:
            row.append(_tokens(meta, TOKEN_FIELDS[column]))
            continue
        value = staged[FIELDS[column].name]
        if kind is ColumnType.TEXT:
            value = _text(value) if value else None
        elif kind is ColumnType.MILLIS:
            value = EPOCH + timedelta(milliseconds=value)
        elif kind is ColumnType.JSON:
            value = metadata
        row.append(value)
    return tuple(row)
