"""Operators' corrections: one counter moved up or down, with a ledger entry.

``adjust_usage`` is a fact (``lua/adjust.lua``): idempotent, spooled when
Redis is down and replayed exactly once, and it writes an ``adjust`` ledger
entry with the scope, the window and the signed amount it applied. A counter
is never reset silently, and never taken below zero: a lowering larger than
the counter stops at zero, and the entry (and the answer) say what was
applied.
"""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, date, datetime, tzinfo
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, Literal

from spendgate.core.ids import encode_metadata
from spendgate.core.money import MICROS_PER_UNIT, from_micros, to_decimal
from spendgate.core.protocol import Reply
from spendgate.core.windows import from_ms, to_ms, windows_at
from spendgate.corrections import Adjustment
from spendgate.errors import (
    IdempotencyConflictError,
    InvalidAmountError,
    InvalidArgumentError,
    Scope,
)
from spendgate.errors.arguments import shown
from spendgate.ops.base import fingerprint, new_id, text
from spendgate.ops.facts import Facts
from spendgate.ops.limits import LimitsAndUsage

AdjustWindow = Literal["daily", "monthly"]
_MICRO = Decimal("0.000001")
_REPLAYED, _CONFLICT = int(Reply.REPLAYED), int(Reply.CONFLICT)


def adjust_micros(value: object) -> int:
    """Signed micro-units of a correction: a raise rounded up, a lowering
    rounded toward zero (a correction never charges less than asked, as a
    charge; nor gives back more, as a credit).

    :raise InvalidAmountError: not a number, NaN, infinite, above
        ``MAX_AMOUNT`` either way, or zero (after rounding)
    """
    negative = False
    magnitude: object = value
    if isinstance(value, str):
        stripped = value.strip()
        negative = stripped.startswith("-")
        magnitude = stripped[1:] if negative else value
    elif isinstance(value, Decimal):
        negative, magnitude = value.is_signed(), value.copy_abs()
    elif isinstance(value, float):
        negative, magnitude = math.copysign(1, value) < 0, abs(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        negative, magnitude = value < 0, abs(value)
    amount = to_decimal(magnitude)
    rounding = ROUND_FLOOR if negative else ROUND_CEILING
    micros = int(amount.quantize(_MICRO, rounding=rounding) * MICROS_PER_UNIT)
    if micros == 0:
        raise InvalidAmountError(value, "a correction of zero changes nothing")
    return -micros if negative else micros


def _moment_ms(at: datetime | date, zone: tzinfo | None) -> int:
    """An instant of the window ``at`` names: a datetime is that instant, a
    date is the day of the window time zone ``zone`` (``None``: UTC), taken
    at its noon, which every local day has whatever its daylight saving."""
    if isinstance(at, datetime):
        if at.tzinfo is None:
            raise InvalidArgumentError("at must be an aware datetime (UTC)")
        return to_ms(at)
    if isinstance(at, date):
        return to_ms(datetime(at.year, at.month, at.day, 12, tzinfo=zone or UTC))
    raise InvalidArgumentError(f"at must be a datetime or a date, not {shown(at)}")


class Corrections(LimitsAndUsage, Facts):
    """``adjust_usage``."""

    async def adjust_usage(
        self,
        scope: Scope,
        scope_id: str | None,
        amount: Any,
        window: AdjustWindow = "daily",
        reason: str | None = None,
        idempotency_key: str | None = None,
        *,
        at: datetime | date | None = None,
    ) -> Adjustment:
        """Move one counter, a scope's spent in one day or month, up or down.

        For operators: a wrong charge is given back with ``refund``; this
        corrects a counter itself (a charge that bypassed spendgate, a
        counter moved by hand), with an ``adjust`` ledger entry. A lowering
        stops at zero: :attr:`Adjustment.applied` says what was applied.

        :param scope: ``"user"``, ``"project"`` or ``"global"``
        :param scope_id: the user or project id (ignored for ``"global"``)
        :param amount: signed: positive raises the counter, negative lowers it
        :param window: ``"daily"`` or ``"monthly"``
        :param reason: kept in the entry's metadata
        :param idempotency_key: a replay with it changes nothing
        :param at: an instant (or a day of ``window_timezone``) in the
            window to correct; the current one when omitted. A window not
            begun yet, or whose counters are past
            ``counter_retention_seconds``, is refused
        :raise InvalidArgumentError: a bad scope, window, reason or ``at``
        :raise InvalidAmountError: a bad amount, or zero
        :raise IdempotencyConflictError: a key reused with other arguments
        :raise ShardedRefusalError: a project's or the platform's counter on a
            sharded deployment (``cluster_buckets`` > 1), where that spend is
            the sum of every bucket's and no one counter holds it
        """
        kind, sid = self._scope_id(scope, scope_id)
        if kind != "user":
            self._decided_in_one_bucket(
                f"a {kind}'s spend cannot be adjusted",
                "that spend is the sum of every bucket's counters",
            )
        if window not in ("daily", "monthly"):
            raise InvalidArgumentError(
                f"window must be 'daily' or 'monthly', not {shown(window)}"
            )
        micros = adjust_micros(amount)
        metadata = self._adjust_metadata(micros, reason)
        now_ms = self._now_ms()
        try:
            period, label, ttl_ms = self._adjusted_window(
                window, now_ms, None if at is None else _moment_ms(at, self._zone)
            )
        except OverflowError:
            # (a window at the calendar's ends: its day or month has no end)
            raise InvalidArgumentError(
                f"at {shown(at)} is out of the calendar's range"
            ) from None
        entry_id = self.keys.id_for(new_id(now_ms), sid)
        key, ikey = self._idempotency(idempotency_key, entry_id)
        digest = (
            fingerprint("adjust", kind, sid, micros, window, period, metadata)
            if key
            else ""
        )
        args: tuple[Any, ...] = (now_ms, micros, ttl_ms, digest, entry_id, kind)
        args += (sid, window, period, label, metadata, key)
        info = {"kind": "adjust", "entry": entry_id, "user": sid, "amount": micros}
        reply = await self._store.run("adjust", (ikey,), args, spool_info=info.copy)
        result = Adjustment(
            entry_id=entry_id,
            scope=kind,
            scope_id=sid or None,
            window=window,
            period=label,
            requested=from_micros(micros),
            applied=None,
            spent_after=None,
            occurred_at=from_ms(now_ms),
            spooled=reply is None,
        )
        if reply is None:
            return result  # spooled: what it applies is known once replayed
        if reply[0] == _CONFLICT:
            raise IdempotencyConflictError(key)
        first, first_ms, applied, after = text(reply[1]).split("|")
        return replace(
            result,
            entry_id=first,
            applied=from_micros(int(applied)),
            spent_after=from_micros(int(after)),
            occurred_at=from_ms(int(first_ms)),
            replayed=reply[0] == _REPLAYED,
        )

    def _adjust_metadata(self, micros: int, reason: object) -> str:
        """The entry's metadata: the amount asked for, and the reason.

        :raise InvalidArgumentError: a reason that is not a str
        """
        if reason is not None and not isinstance(reason, str):
            raise InvalidArgumentError(f"reason must be a str, not {shown(reason)}")
        meta = {"requested": str(from_micros(micros))}
        if reason is not None:
            meta["reason"] = reason
        return encode_metadata(meta, self._max_meta)

    def _adjusted_window(
        self, window: AdjustWindow, now_ms: int, at_ms: int | None
    ) -> tuple[str, str, int]:
        """The window's key part, its ledger label and its counter's TTL.

        :raise InvalidArgumentError: not begun yet, or past its retention
        """
        # The window time zone's day and month: those every charge counted in.
        w = windows_at(now_ms if at_ms is None else at_ms, self._zone)
        now = windows_at(now_ms, self._zone)
        if window == "daily":
            part, end = w.day, w.day_end_ms
            label = f"{part[:4]}-{part[4:6]}-{part[6:]}"
            begun = end <= now.day_end_ms
        else:
            part, end = w.month, w.month_end_ms
            label = f"{part[:4]}-{part[4:]}"
            begun = end <= now.month_end_ms
        if not begun:
            raise InvalidArgumentError(f"the {window} window {label} has not begun")
        ttl_ms = end + self._retention_ms - now_ms
        if ttl_ms <= 0:
            raise InvalidArgumentError(
                f"the counters of {label} are no longer kept "
                "(counter_retention_seconds): it cannot be corrected"
            )
        return part, label, ttl_ms
