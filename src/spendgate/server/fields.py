"""The value types of the HTTP API, as the OpenAPI document states them.

The document is the contract: each type's JSON schema and its validator say
the same thing, and the tests check the one against the other
(``tests/test_server_document.py``).

- An amount is a JSON number (read exactly, 0 to ``MAX_AMOUNT``) or a plain
  decimal string matching :data:`AMOUNT_PATTERN`: ASCII digits, at most 12
  after the point, no sign, exponent, space or underscore, 0 to
  ``MAX_AMOUNT``. Strings are stricter than the Python API on purpose: what
  the document allows is all a client may send.
- A signed amount (a correction) is the same with an optional leading
  ``-`` (:data:`SIGNED_AMOUNT_PATTERN`), ``-MAX_AMOUNT`` to ``MAX_AMOUNT``.
- An id (user, project, lease, idempotency key, in a body, a path or a query;
  a model's name too, at most 256 characters)
  has a character that is not a space and no control character
  (:data:`ID_PATTERN`). In a path, a newline makes the path match no route
  (404, documented on those operations): Starlette's path parameters stop
  at a newline, and a converter of our own would rename the routes the
  latency metric is labelled with. Any other control character is a 422.
- A TTL is a JSON integer; ``14216.0`` is one too, as JSON Schema counts it.
- Metadata is a JSON object kept as a JSON parser reads it: ``0.7`` is the
  number 0.7, as the library and the CLI keep it (not the string ``"0.7"``
  of the exact Decimal amounts are read as); a number beyond a double's
  range is a 422.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    StringConstraints,
    WithJsonSchema,
)

from spendgate.core.money import MAX_AMOUNT, to_decimal
from spendgate.errors.arguments import shown

__all__ = [
    "AMOUNT_PATTERN",
    "ID_PATTERN",
    "Amount",
    "Id",
    "Metadata",
    "ModelName",
    "ModelQuery",
    "ProjectQuery",
    "SIGNED_AMOUNT_PATTERN",
    "ScopeIdPath",
    "SignedAmount",
    "TEAM_ID_PATTERN",
    "TeamId",
    "TtlSeconds",
    "UserIdPath",
]

_MAX = int(MAX_AMOUNT)
# MAX_AMOUNT is a power of ten (1e9): below it any 9 digits, or exactly it.
#: a decimal string amount: 0 to MAX_AMOUNT, at most 12 digits after the point
AMOUNT_PATTERN = (
    rf"^(?:[0-9]{{1,{len(str(_MAX)) - 1}}}(?:\.[0-9]{{1,12}})?"
    rf"|{_MAX}(?:\.0{{1,12}})?)$"
)
_AMOUNT = re.compile(AMOUNT_PATTERN)

_CONTROLS = r"\x00-\x1f\x7f-\x9f"
# The characters str.isspace() counts that are not controls, spelled out:
# "\s" means a different set in each regex dialect (ECMA-262 adds U+FEFF,
# Python adds U+001C-U+001F and U+0085; Python tools may read it as ASCII).
_SPACES = r" \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
#: an id: no control character, and one character that is not a space
ID_PATTERN = rf"^[^{_CONTROLS}]*[^{_CONTROLS}{_SPACES}][^{_CONTROLS}]*$"
_CONTROL = re.compile(rf"[{_CONTROLS}]")


def _exact_amount(value: object) -> Decimal:
    # JSON numbers arrive as Decimal (the body is parsed with parse_float=Decimal)
    # or int. The library's rules first (type, sign, maximum: their messages),
    # then the document's stricter form for strings.
    amount = to_decimal(value)
    if isinstance(value, str) and _AMOUNT.fullmatch(value) is None:
        raise ValueError(
            "a string amount is plain decimal digits with at most 12 after "
            'the point (e.g. "12.5"): no sign, exponent, space or underscore'
        )
    return amount


#: an amount: a JSON number or a decimal string, read exactly
Amount = Annotated[
    Decimal,
    BeforeValidator(_exact_amount),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": _MAX},
                {"type": "string", "pattern": AMOUNT_PATTERN},
            ],
            "description": "an exact amount: a JSON number or a decimal string, "
            f"0 to {MAX_AMOUNT}",
        }
    ),
]


#: a signed decimal string amount: an amount string with an optional "-"
SIGNED_AMOUNT_PATTERN = "^-?" + AMOUNT_PATTERN[1:]
_SIGNED_AMOUNT = re.compile(SIGNED_AMOUNT_PATTERN)


def _exact_signed_amount(value: object) -> Decimal:
    # The magnitude is read by the library's rules (type, maximum: their
    # messages), the sign kept; strings take the document's stricter form.
    if isinstance(value, str):
        if _SIGNED_AMOUNT.fullmatch(value) is None:
            raise ValueError(
                "a string amount is an optional '-' then plain decimal digits "
                'with at most 12 after the point (e.g. "-12.5")'
            )
        magnitude = to_decimal(value.removeprefix("-"))
        return -magnitude if value.startswith("-") else magnitude
    if isinstance(value, Decimal) and value.is_signed():
        return -to_decimal(value.copy_abs())
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        return -to_decimal(-value)
    return to_decimal(value)


#: a signed amount (+ raises, - lowers): a JSON number or a decimal string
SignedAmount = Annotated[
    Decimal,
    BeforeValidator(_exact_signed_amount),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": -_MAX, "maximum": _MAX},
                {"type": "string", "pattern": SIGNED_AMOUNT_PATTERN},
            ],
            "description": "an exact signed amount: a JSON number or a decimal "
            f"string, -{MAX_AMOUNT} to {MAX_AMOUNT}",
        }
    ),
]


def usable_id(value: str) -> str:
    """``value``, when it is an id the document allows.

    :raise ValueError: blank, or holding a control character
    """
    if value.isspace():
        raise ValueError("must not be blank")
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


#: an opaque id (the configured ``max_id_length`` is checked by the budget)
Id = Annotated[
    str,
    StringConstraints(min_length=1),
    AfterValidator(usable_id),
    WithJsonSchema({"type": "string", "minLength": 1, "pattern": ID_PATTERN}),
]


#: a new team's id: an id without "/" (its paths, ``/v1/teams/{team_id}``
#: and under, take none)
TEAM_ID_PATTERN = rf"^[^{_CONTROLS}/]*[^{_CONTROLS}{_SPACES}/][^{_CONTROLS}/]*$"


def _no_slash(value: str) -> str:
    if "/" in value:
        raise ValueError("must not contain '/': the team's paths could not name it")
    return value


TeamId = Annotated[
    str,
    StringConstraints(min_length=1),
    AfterValidator(usable_id),
    AfterValidator(_no_slash),
    WithJsonSchema({"type": "string", "minLength": 1, "pattern": TEAM_ID_PATTERN}),
]


#: a model's name: an id's rule (the library refuses a control character
#: in it too), at most 256 characters
ModelName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=256),
    AfterValidator(usable_id),
    WithJsonSchema(
        {"type": "string", "minLength": 1, "maxLength": 256, "pattern": ID_PATTERN}
    ),
]


def _plain_numbers(root: dict[str, Any]) -> dict[str, Any]:
    # Only fractions and exponents arrive as Decimal (ints stay int). The
    # body's own fresh tree is changed in place, without recursion: metadata
    # nests as deep as the JSON parser allows.
    stack: list[dict[str, Any] | list[Any]] = [root]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, item in items:
            if isinstance(item, Decimal):
                number = float(item)
                if not math.isfinite(number):
                    raise ValueError(
                        f"metadata holds a number out of range: {shown(item)}"
                    )
                node[key] = number  # type: ignore[index]
            elif isinstance(item, dict | list):
                stack.append(item)
    return root


def _as_json_reads_it(value: object) -> object:
    # The body is parsed with parse_float=Decimal, for amounts; in metadata a
    # Decimal would be kept as a string ("0.7"), where the library, the CLI
    # and any JSON client keep the number 0.7.
    return _plain_numbers(value) if isinstance(value, dict) else value


#: an object kept as given: numbers stay numbers, as a JSON parser reads
#: them (not the exact decimals the amounts are read as)
Metadata = Annotated[dict[str, Any], BeforeValidator(_as_json_reads_it)]


def _integral(value: object) -> object:
    # A JSON number with a fraction of zero (14216.0) is an integer to JSON
    # Schema; it arrives as a Decimal. Only small ones are turned into int:
    # int() of 1e100000000 would build a hundred-million-digit number.
    if (
        isinstance(value, Decimal)
        and value.is_finite()
        and value.adjusted() < 18
        and value == value.to_integral_value()
    ):
        return int(value)
    return value


#: a lease's time to live in seconds: 1 to 7 days
TtlSeconds = Annotated[int, Field(gt=0, le=7 * 86400), BeforeValidator(_integral)]

_ID_SCHEMA = {"pattern": ID_PATTERN}
UserIdPath = Annotated[
    str,
    Path(min_length=1, description="the user id", json_schema_extra=_ID_SCHEMA),
    AfterValidator(usable_id),
]
ScopeIdPath = Annotated[
    str,
    Path(
        min_length=1,
        description="the user or project id (anything, e.g. '-', for global)",
        json_schema_extra=_ID_SCHEMA,
    ),
    AfterValidator(usable_id),
]
ModelQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=256,
        description="the model: its per-model caps (needs model_caps)",
        json_schema_extra=_ID_SCHEMA,
    ),
    AfterValidator(lambda value: value if value is None else usable_id(value)),
]
ProjectQuery = Annotated[
    str | None,
    Query(
        min_length=1,
        description="also report this project",
        json_schema_extra=_ID_SCHEMA,
    ),
    AfterValidator(lambda value: value if value is None else usable_id(value)),
]
