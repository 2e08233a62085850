"""The functions a pricing expression may call, with bursar's meanings, and
the decimal context every expression is evaluated in.

==============================  =============================================
``ceil(x)``, ``floor(x)``       to the integer above / below
``round(x)``, ``round(x, n)``   half *up* (not Python's half-even) to ``n``
                                decimals, ``-30 <= n <= 30`` (``n`` is cut to
                                an integer first)
``min(a, ...)``, ``max(a, ...)``  one or more values
``if(c, t, f)``                 ``t`` when ``c`` is not zero, else ``f``; only
                                the branch taken is evaluated
``tier(v, t1, r1, ..., d)``     ``r_i`` for the first ``t_i`` with ``v < t_i``,
                                else ``d``: an even count of at least 4
``clamp(x, lo, hi)``            ``max(lo, min(x, hi))`` (so ``lo`` when
                                ``lo > hi``)
``percentile(p, v1, ...)``      the ``p``-th percentile (``0 <= p <= 100``)
                                of the values, by linear interpolation
                                between the sorted values
==============================  =============================================

The context: 80 significant digits, so a product of a 19-digit count and a
30-digit price is exact; an intermediate result whose magnitude passes
``1E+60`` is an overflow; division by zero and invalid operations raise
instead of giving infinities or NaN. Each signal becomes an
``ExpressionError`` at the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import (
    ROUND_CEILING,
    ROUND_FLOOR,
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
)

__all__ = ["ARITY", "CONTEXT", "FUNCTIONS", "EvaluationFailure"]

#: significant digits of every intermediate result
PRECISION = 80
#: the largest decimal exponent of an intermediate result
EXPONENT_MAX = 60
#: the largest |n| of round(x, n)
ROUND_DIGITS_MAX = 30
#: the most arguments of a call (tier: 99 thresholds)
ARGS_MAX = 200

CONTEXT = Context(
    prec=PRECISION,
    rounding=ROUND_HALF_EVEN,
    Emax=EXPONENT_MAX,
    Emin=-EXPONENT_MAX,
    traps=[InvalidOperation, DivisionByZero, Overflow],
)

_ONE = Decimal(1)
_HUNDRED = Decimal(100)


class EvaluationFailure(Exception):
    """Raised inside an evaluation; the expression turns it into an
    ``ExpressionError`` naming itself."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _ceil(x: Decimal) -> Decimal:
    return x.to_integral_value(rounding=ROUND_CEILING, context=CONTEXT)


def _floor(x: Decimal) -> Decimal:
    return x.to_integral_value(rounding=ROUND_FLOOR, context=CONTEXT)


def _round(x: Decimal, digits: Decimal | None = None) -> Decimal:
    n = 0 if digits is None else int(digits)
    if not -ROUND_DIGITS_MAX <= n <= ROUND_DIGITS_MAX:
        raise EvaluationFailure(
            f"round() takes {-ROUND_DIGITS_MAX} to {ROUND_DIGITS_MAX} digits, not {n}"
        )
    return x.quantize(_ONE.scaleb(-n), rounding=ROUND_HALF_UP, context=CONTEXT)


def _min(*values: Decimal) -> Decimal:
    return min(values)


def _max(*values: Decimal) -> Decimal:
    return max(values)


def _tier(*args: Decimal) -> Decimal:
    value = args[0]
    for i in range(1, len(args) - 1, 2):
        if value < args[i]:
            return args[i + 1]
    return args[-1]


def _clamp(x: Decimal, lo: Decimal, hi: Decimal) -> Decimal:
    return max(lo, min(x, hi))


def _percentile(p: Decimal, *values: Decimal) -> Decimal:
    if not 0 <= p <= _HUNDRED:
        raise EvaluationFailure(f"percentile() needs 0 <= p <= 100, not {p}")
    ordered = sorted(values)
    n = len(ordered)
    if n == 1:
        return ordered[0]
    # bursar's formula, step for step, so both round alike
    ctx = CONTEXT
    rank = ctx.multiply(ctx.divide(p, _HUNDRED), Decimal(n - 1))
    lower = int(rank.to_integral_value(rounding=ROUND_FLOOR, context=ctx))
    upper = min(lower + 1, n - 1)
    frac = ctx.subtract(rank, Decimal(lower))
    return ctx.add(
        ctx.multiply(ordered[lower], ctx.subtract(_ONE, frac)),
        ctx.multiply(ordered[upper], frac),
    )


#: the callable of each eager function (``if`` is compiled lazily instead)
FUNCTIONS: dict[str, Callable[..., Decimal]] = {
    "ceil": _ceil,
    "floor": _floor,
    "round": _round,
    "min": _min,
    "max": _max,
    "tier": _tier,
    "clamp": _clamp,
    "percentile": _percentile,
}

#: the fewest and most arguments of each function, checked at load
ARITY: dict[str, tuple[int, int]] = {
    "ceil": (1, 1),
    "floor": (1, 1),
    "round": (1, 2),
    "min": (1, ARGS_MAX),
    "max": (1, ARGS_MAX),
    "if": (3, 3),
    "tier": (4, ARGS_MAX),
    "clamp": (3, 3),
    "percentile": (2, ARGS_MAX),
}
