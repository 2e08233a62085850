"""Reading a price book: JSON or YAML text to plain data, without floats.

Every number is read exactly (JSON and YAML decimals become ``Decimal``
from their text; a float handed to ``from_dict`` goes through its shortest
repr), and the document is bounded: at most :data:`BOOK_BYTES_MAX` (1 MiB)
of text, :data:`BOOK_NODES_MAX` values (which also defuses YAML alias
"billion laughs" documents: aliases are counted each time they are used)
and :data:`BOOK_DEPTH_MAX` levels of nesting. A decimal number has an
exponent within ±:data:`NUMBER_EXPONENT_MAX`, as an expression's literals
do: ``1e-99999999`` is a dozen bytes that would be written out as a
hundred million digits, and ``1e99999999`` overflows any arithmetic.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any, NoReturn

from spendgate.core.money import MAX_AMOUNT
from spendgate.errors import PricingConfigError
from spendgate.errors.arguments import shown
from spendgate.pricing.compiler import LITERAL_EXPONENT_MAX

__all__ = [
    "BOOK_BYTES_MAX",
    "amount",
    "from_json_text",
    "from_yaml_text",
    "jsonable",
    "plain",
    "read_file",
    "read_stream",
]

BOOK_BYTES_MAX = 1 << 20
BOOK_NODES_MAX = 100_000
BOOK_DEPTH_MAX = 32
#: the longest name (a model, a tool, a job, a plan) a book may use
NAME_MAX = 256
#: the largest exponent of a decimal number, and of its last digit's place
NUMBER_EXPONENT_MAX = LITERAL_EXPONENT_MAX


def fail(where: str, reason: str) -> NoReturn:
    raise PricingConfigError(reason, where=where or None)


def _check_size(text: str | bytes) -> str:
    if len(text) > BOOK_BYTES_MAX:
        fail("", f"a price book is at most {BOOK_BYTES_MAX} bytes")
    if isinstance(text, bytes):
        try:
            return text.decode("utf-8-sig")
        except UnicodeDecodeError:
            fail("", "a price book is UTF-8 text")
    return text


def from_json_text(text: str | bytes) -> object:
    """Parse a JSON price book; decimals become ``Decimal``, exactly."""
    body = _check_size(text)
    try:
        return json.loads(body, parse_float=Decimal, parse_constant=_no_constant)
    except PricingConfigError:
        raise
    except json.JSONDecodeError as exc:
        fail("", f"not valid JSON: {exc.msg} at {exc.lineno}:{exc.colno}")
    except (ValueError, RecursionError) as exc:
        fail("", f"not a readable JSON price book ({type(exc).__name__})")


def _no_constant(name: str) -> NoReturn:
    fail("", f"{name} is not a number a price book may hold")


def from_yaml_text(text: str | bytes) -> object:
    """Parse a YAML price book with PyYAML's safe loader (libyaml's when
    installed); decimals become ``Decimal``, exactly."""
    body = _check_size(text)
    import yaml  # only books written in YAML pay for importing PyYAML

    try:
        return yaml.load(body, Loader=_yaml_loader())  # a SafeLoader subclass
    except PricingConfigError:
        raise
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        fail("", f"not a readable YAML price book: {exc}")


_LOADER: list[type] = []


def _yaml_loader() -> type:
    if _LOADER:
        return _LOADER[0]
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class DecimalSafeLoader(base):  # type: ignore[valid-type,misc]
        """The safe loader, reading floats as exact ``Decimal``."""

    def construct_decimal(loader: Any, node: Any) -> Decimal:
        text = str(loader.construct_scalar(node))
        try:
            number = Decimal(text.replace("_", ""))
        except InvalidOperation:
            number = Decimal("NaN")
        if not number.is_finite():
            fail("", f"{text} is not a finite number")
        return number

    DecimalSafeLoader.add_constructor("tag:yaml.org,2002:float", construct_decimal)
    _LOADER.append(DecimalSafeLoader)
    return DecimalSafeLoader


def read_file(path: str | Path) -> tuple[str, bool]:
    """The text of a book file, and whether it is JSON (by its extension,
    else by its first character)."""
    file = Path(path)
    try:
        with file.open("rb") as stream:
            data = stream.read(BOOK_BYTES_MAX + 1)
    except OSError as exc:
        fail("", f"cannot read {file}: {exc.strerror or exc}")
    text = _check_size(data)
    suffix = file.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return text, False
    return text, suffix == ".json" or text.lstrip().startswith("{")


def read_stream(stream: IO[Any]) -> tuple[str, bool]:
    """The text of a book read from a stream (stdin: its bytes, decoded as
    :func:`read_file` decodes a file's), and whether it is JSON (by its
    first character)."""
    text = _check_size(stream.read(BOOK_BYTES_MAX + 1))
    return text, text.lstrip("\ufeff \t\r\n").startswith("{")


def plain(data: object) -> Any:
    """A fresh copy of ``data`` holding only dicts with ``str`` keys, lists,
    ``str``, ``int``, ``bool``, ``None`` and finite ``Decimal`` (floats
    converted through their shortest repr), within the bounds above."""
    budget = [BOOK_NODES_MAX]
    return _plain(data, "", 0, budget)


def _plain(value: object, where: str, depth: int, budget: list[int]) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        fail("", f"a price book holds at most {BOOK_NODES_MAX} values")
    if depth > BOOK_DEPTH_MAX:
        fail(where, f"nested more than {BOOK_DEPTH_MAX} levels deep")
    if isinstance(value, str):
        return _text(value, where)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            fail(where, f"{value} is not a finite number")
        return _bounded(Decimal(float.__repr__(value)), where)
    if isinstance(value, Decimal):
        if not value.is_finite():
            fail(where, f"{value} is not a finite number")
        return _bounded(value, where)
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                fail(where, f"the key {key!r} is not a string")
            out[_text(key, where)] = _plain(item, _join(where, key), depth + 1, budget)
        return out
    if isinstance(value, list | tuple):
        return [
            _plain(item, f"{where}[{i}]", depth + 1, budget)
            for i, item in enumerate(value)
        ]
    fail(where, f"a {type(value).__name__} cannot be in a price book")


def _text(value: str, where: str) -> str:
    """``value`` when it is UTF-8 text: a lone surrogate (``"\\udcff"`` in
    JSON, or a file name's undecodable byte) cannot be stored in Postgres,
    whose mirror of the book would then fail on every flush."""
    if not value.isascii():  # (a flag on str: free, unlike encoding)
        try:
            value.encode()
        except UnicodeEncodeError:
            fail(where, f"{shown(value)} is not UTF-8 text")
    return value


def _bounded(number: Decimal, where: str) -> Decimal:
    """``number`` when its exponent, and its last digit's place, are within
    ±:data:`NUMBER_EXPONENT_MAX` (a finite ``Decimal``)."""
    last = number.as_tuple().exponent
    assert isinstance(last, int)  # (finite)
    if number.adjusted() > NUMBER_EXPONENT_MAX or last < -NUMBER_EXPONENT_MAX:
        fail(
            where,
            f"{number} has an exponent beyond ±{NUMBER_EXPONENT_MAX} (a number "
            f"has at most {NUMBER_EXPONENT_MAX} digits after the point)",
        )
    return number


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


_WHOLE_MAX = Decimal(10) ** 18


def jsonable(value: Any) -> Any:
    """``plain`` data as JSON can hold it: a ``Decimal`` becomes an ``int``
    when whole, else its exact text (``"0.5"``), never a float."""
    if isinstance(value, Decimal):
        if abs(value) < _WHOLE_MAX and value == value.to_integral_value():
            return int(value)
        return format(value, "f")
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [jsonable(item) for item in value]
    return value


def amount(value: object, where: str, *, allow_negative: bool = False) -> Decimal:
    """A money amount of the book: a number (or numeric string) within
    ±``MAX_AMOUNT``, non-negative unless allowed."""
    if isinstance(value, bool) or value is None:
        fail(where, "must be a number")
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, Decimal):
        number = value
    elif isinstance(value, str) and len(value) <= 64 and value.isascii():
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            fail(where, f"{value!r} is not a number")
        if number.is_finite():
            _bounded(number, where)
    else:
        fail(where, "must be a number")
    if not number.is_finite() or abs(number) > MAX_AMOUNT:
        fail(where, f"must be a finite number within ±{MAX_AMOUNT}")
    if number < 0 and not allow_negative:
        fail(where, f"must be >= 0, not {number}")
    return number


def integer(value: object, where: str, *, low: int = 0) -> int:
    """A whole count of the book (``max_calls``, ``priority``)."""
    if value.__class__ is not int or value < low:
        fail(where, f"must be an integer >= {low}")
    return value


def mapping(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        fail(where, f"must be a mapping, not {type(value).__name__}")
    return value


def name(key: str, where: str) -> str:
    if not 0 < len(key) <= NAME_MAX:
        fail(where, f"a name must have 1 to {NAME_MAX} characters")
    return key


def choice(value: object, where: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        fail(where, f"must be one of {', '.join(allowed)}, not {value!r}")
    return str(value)
