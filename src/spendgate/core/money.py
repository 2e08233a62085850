"""Exact money: ``Decimal`` at the API, integer micro-units (1e-6) in storage.

Charges and holds round *up* to the micro-unit (never undercharge), credits
round *down* (never over-credit). Floats are taken through their shortest
repr, so ``0.1`` is exactly ``Decimal("0.1")``; no float arithmetic happens
anywhere on the money path.
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation

# At module level, not per call: every hot-path call reads an amount, and an
# import statement run on each read cost about a third of the conversion.
from spendgate.errors import InvalidAmountError

#: micro-units per unit of money
MICROS_PER_UNIT = 1_000_000
#: the largest amount (and limit) accepted: 1e9 units, so any sum the scripts
#: handle stays far below 2^53 micro-units, where Lua's doubles stop being exact
MAX_AMOUNT = Decimal(1_000_000_000)
MAX_MICROS = int(MAX_AMOUNT) * MICROS_PER_UNIT

_MICRO = Decimal("0.000001")


def to_decimal(value: object) -> Decimal:
    """Read an amount as a finite, non-negative ``Decimal`` within ``MAX_AMOUNT``.

    :param value: ``Decimal``, ``int``, ``str`` or ``float``
    :raise InvalidAmountError: for ``bool``, NaN, infinities, negatives,
        anything above ``MAX_AMOUNT`` and anything that is not a number
    """
    if isinstance(value, bool):
        raise InvalidAmountError(value, "a bool is not an amount")
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidAmountError(value, "not a finite number")
        # float's own repr: a subclass's (numpy's "np.float64(0.1)") is no number
        amount = Decimal(float.__repr__(value))
    elif isinstance(value, str):
        if len(value) > 64:
            raise InvalidAmountError(value[:64] + "...", "too long to be an amount")
        # Decimal() also reads "1_000", "١٢" and "１": an amount is plain ASCII
        if not value.isascii() or "_" in value:
            raise InvalidAmountError(value, "not a plain ASCII decimal number")
        try:
            amount = Decimal(value.strip())
        except InvalidOperation:
            raise InvalidAmountError(value, "not a number") from None
    else:
        raise InvalidAmountError(value, f"{type(value).__name__} is not a number")
    if not amount.is_finite():
        raise InvalidAmountError(value, "not a finite number")
    if amount < 0:
        raise InvalidAmountError(value, "negative")
    if amount > MAX_AMOUNT:
        raise InvalidAmountError(value, f"above the maximum of {MAX_AMOUNT}")
    return amount


#: the most memoised conversions kept per input type (then it starts afresh)
_MEMO_SIZE = 4096
# Conversions of floats, strings and Decimals, memoised per exact type:
# callers send the same prices and estimates over and over, and the exact
# conversion (shortest repr, Decimal, quantize) is most of what reading an
# amount costs. Keyed per type because equal values of different types may
# convert differently (a Decimal holding a float's binary expansion == that
# float); equal Decimals (0.1, 0.10) convert alike.
_CHARGE_MEMO: dict[type, dict[object, int]] = {float: {}, str: {}, Decimal: {}}


def charge_micros(value: object) -> int:
    """Micro-units of a charge or hold, rounded up."""
    cls = value.__class__
    if cls is int:
        if 0 <= value <= 1_000_000_000:  # type: ignore[operator]
            return value * MICROS_PER_UNIT  # type: ignore[operator]
        memo = None
    else:
        memo = _CHARGE_MEMO.get(cls)
        if memo is not None:
            try:
                known = memo.get(value)
            except TypeError:  # a signalling-NaN Decimal cannot be hashed
                known = memo = None
            if known is not None:
                return known
    micros = int(
        to_decimal(value).quantize(_MICRO, rounding=ROUND_CEILING) * MICROS_PER_UNIT
    )
    if memo is not None:
        if len(memo) >= _MEMO_SIZE:
            memo.clear()
        memo[value] = micros
    return micros


def credit_micros(value: object) -> int:
    """Micro-units of a credit, rounded down."""
    return int(
        to_decimal(value).quantize(_MICRO, rounding=ROUND_FLOOR) * MICROS_PER_UNIT
    )


def limit_micros(value: object) -> int:
    """Micro-units of a cap, rounded down (a cap never grows by rounding)."""
    return credit_micros(value)


def signed_micros(value: Decimal) -> int:
    """Micro-units of a signed bound, a balance floor (negative: a credit
    line), rounded toward zero as a cap is."""
    micros = limit_micros(abs(value))
    return -micros if value < 0 else micros


_DECIMAL_MEMO: dict[int, Decimal] = {}


def from_micros(micros: int) -> Decimal:
    """The exact ``Decimal`` of a count of micro-units (``0.1``, not ``0.100000``)."""
    # Memoised like charge_micros (the same amounts come back every call);
    # a Decimal is immutable, so sharing one is safe.
    known = _DECIMAL_MEMO.get(micros)
    if known is None:
        known = Decimal(micros) / MICROS_PER_UNIT
        if len(_DECIMAL_MEMO) >= _MEMO_SIZE:
            _DECIMAL_MEMO.clear()
        _DECIMAL_MEMO[micros] = known
    return known
