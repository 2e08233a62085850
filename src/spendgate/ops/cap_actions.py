"""Cap actions and their thresholds: how ``set_limits(..., action=,
thresholds=)`` is checked and stored, and how a charge's reached thresholds
come back from the scripts.

A scope's action is the last part of its override (``lua/_actions.lua``):
the action's letter, then its thresholds in millionths of the cap,
ascending, the cap itself always last (``"w500000,800000,1000000"``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from spendgate.core.money import from_micros
from spendgate.core.protocol import (
    CAP_ACTION_LETTERS,
    THRESHOLD_SCALE,
    WARNED_MARK,
    WINDOW_NAMES,
    CapAction,
)
from spendgate.errors import InvalidArgumentError
from spendgate.errors.arguments import shown
from spendgate.models import CapWarning

#: the thresholds of ``warn`` and ``notify`` when none are given
DEFAULT_THRESHOLDS = (Decimal("0.5"), Decimal("0.8"), Decimal("0.95"), Decimal(1))
#: the thresholds of ``deny`` when none are given: the cap itself
DENY_THRESHOLDS = (Decimal(1),)
#: thresholds one scope may have at most (the cap itself included)
MAX_THRESHOLDS = 10

_ACTIONS = {str(action): action for action in CapAction}
_BY_LETTER = {letter: action for action, letter in CAP_ACTION_LETTERS.items()}


def encode_action(action: Any, thresholds: Any) -> str:
    """The actions part of an override for ``action`` and ``thresholds``
    (``None``: the action's default).

    Thresholds are fractions of the cap in (0, 1], to the millionth; they
    are sorted and deduplicated, and the cap itself (1) is always one:
    reaching the cap is ``credits.cap_reached`` whatever the list.

    :raise InvalidArgumentError: an unknown action, a threshold that is not
        a number in (0, 1] to the millionth, or more than
        :data:`MAX_THRESHOLDS`
    """
    if not isinstance(action, str) or action not in _ACTIONS:
        raise InvalidArgumentError(
            f"action must be 'deny', 'warn' or 'notify', not {shown(action)}"
        )
    kind = _ACTIONS[action]
    if thresholds is None:
        chosen: Sequence[Decimal] = (
            DENY_THRESHOLDS if kind is CapAction.DENY else DEFAULT_THRESHOLDS
        )
    else:
        chosen = [_threshold(value) for value in _iterable(thresholds)]
    scaled = sorted({int(t * THRESHOLD_SCALE) for t in chosen} | {THRESHOLD_SCALE})
    if len(scaled) > MAX_THRESHOLDS:
        raise InvalidArgumentError(
            f"a cap has at most {MAX_THRESHOLDS} thresholds (the cap itself "
            f"included), not {len(scaled)}"
        )
    return CAP_ACTION_LETTERS[kind] + ",".join(str(t) for t in scaled)


def decode_action(part: str | None) -> tuple[str | None, tuple[Decimal, ...]]:
    """An override's actions part as ``(action, thresholds)``; ``(None, ())``
    for none."""
    if not part:
        return None, ()
    action = _BY_LETTER[part[0]]
    return str(action), tuple(
        Decimal(int(t)) / THRESHOLD_SCALE for t in part[1:].split(",") if t
    )


def _iterable(value: Any) -> Iterable[Any]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidArgumentError(
            f"thresholds must be a sequence of fractions of the cap, not {shown(value)}"
        )
    return value


def _threshold(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, Decimal | int | float | str):
        raise InvalidArgumentError(f"a threshold must be a number, not {shown(value)}")
    try:
        # (a float by its shortest repr, as amounts: 0.8 is exactly 0.8; an
        # int as it is: one of over 4,300 digits has no str)
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise InvalidArgumentError(
            f"a threshold must be a number, not {shown(value)}"
        ) from None
    if not number.is_finite() or not 0 < number <= 1:
        raise InvalidArgumentError(
            f"a threshold is a fraction of the cap in (0, 1], not {shown(value)}"
        )
    if (number * THRESHOLD_SCALE) % 1:
        raise InvalidArgumentError(
            f"a threshold is kept to the millionth of the cap: {shown(value)} is finer"
        )
    return number


def split_warned(payload: str) -> tuple[str, list[str] | None]:
    """A charge's replay payload and the thresholds the charge took warn
    scopes to, apart: the payload as the charge's own reply had it, and the
    flat list :func:`cap_warnings` reads (``None`` for none; see
    :data:`~spendgate.core.protocol.WARNED_MARK`)."""
    head, _, crossed = payload.partition(WARNED_MARK)
    return head, crossed.split(",") if crossed else None


def cap_warnings(
    crossed: Sequence[Any] | None, user_id: str, project_id: str | None
) -> tuple[CapWarning, ...]:
    """The thresholds a charge reached in ``warn`` scopes, from the flat list
    the script answered (scope index, window code, threshold, limit, spent,
    for each; see ``cap_events`` in ``lua/_actions.lua``)."""
    if not crossed:
        return ()
    n = 3 if project_id is not None else 2
    warnings = []
    for at in range(0, len(crossed), 5):
        index, window, threshold, limit, spent = (int(v) for v in crossed[at : at + 5])
        if index == 1:
            scope, scope_id = "user", user_id
        elif index == n:
            scope, scope_id = "global", None
        else:
            scope, scope_id = "project", project_id
        warnings.append(
            CapWarning(
                scope=scope,
                scope_id=scope_id,
                window=WINDOW_NAMES[window],
                threshold=Decimal(threshold) / THRESHOLD_SCALE,
                limit=from_micros(limit),
                spent=from_micros(spent),
            )
        )
    return tuple(warnings)
