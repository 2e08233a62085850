"""What every ``spendgate`` command prints: tables, JSON, error lines.

One rule for text that comes from the store (ids, models, metadata): it is
printed escaped, so a newline or a control character in an id cannot break
a table, forge a line or drive the terminal. JSON is printed ASCII-only
(``ensure_ascii=True``): every non-ASCII character becomes ``\\uXXXX``, so
C1 controls, bidirectional overrides and lone surrogates (which a UTF-8
stdout cannot even encode) reach the terminal as plain escapes, and the
document still parses to the same values.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, is_dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from spendgate.errors import ExitCode

#: what a table shows for a value that is missing (no project, no id, no mean)
DASH = "-"


def fail(message: str, code: ExitCode) -> ExitCode:
    """Print ``spendgate: <message>`` on stderr and return ``code``."""
    print(f"spendgate: {printable(message)}", file=sys.stderr)
    return code


def printable(value: object) -> str:
    """``value`` as text that cannot break a line or a table."""
    text = str(value)
    if text.isprintable():
        return text
    # An id holding a newline or control character must not break the table.
    return text.encode("unicode_escape", "backslashreplace").decode("ascii")


def dash(value: object, missing: str = DASH) -> object:
    """``value``, or ``missing`` when it is ``None`` (for table cells)."""
    return missing if value is None else value


def text_or_none(value: object) -> str | None:
    """``value`` as a string, ``None`` kept (for JSON amounts: exact strings)."""
    return None if value is None else str(value)


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Columns aligned; numbers right-aligned; ``(no rows)`` under an empty one."""
    cells = [list(header)] + [[printable(c) for c in row] for row in rows]
    numeric = [
        bool(rows) and all(isinstance(row[i], int | Decimal) for row in rows)
        for i in range(len(header))
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        line = "  ".join(
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(row, widths, numeric, strict=True)
        )
        print(line.rstrip())
    if not rows:
        print("(no rows)")


def jsonable(value: Any) -> Any:
    """``value`` with amounts as exact strings, moments as ISO 8601 and
    dataclasses as objects: what :func:`print_json` writes."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if is_dataclass(value) and not isinstance(value, type):
        return jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def print_json(body: Any) -> None:
    """``body`` as indented, ASCII-only JSON on stdout."""
    print(json.dumps(jsonable(body), indent=2, ensure_ascii=True))
