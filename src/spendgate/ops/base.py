"""What every operation class stands on: the store, the keys, the clock.

The operation classes (:mod:`spendgate.ops.admission`, ``leases``, ``facts``,
``limits``) are mixins over this base, composed into one
:class:`~spendgate.BudgetManager`: a call goes straight from the public
method to :meth:`Store.run <spendgate.core.store.Store.run>`, with no
delegating layer in between (each await level costs the hot path).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any

from spendgate.core.windows import Windows, to_ms, windows_at

if TYPE_CHECKING:
    from spendgate.config import BudgetConfig
    from spendgate.core.keys import Keys
    from spendgate.core.store import Store

Clock = Callable[[], datetime]


def new_id(now_ms: int) -> str:
    """A time-ordered id, unique across processes: 12 hex digits of ms, 16
    random (one hex() of both: formatting the ms as "{:012x}" costs as much)."""
    return (now_ms.to_bytes(6, "big") + os.urandom(8)).hex()


def fingerprint(*parts: object) -> str:
    """What an idempotency key is checked against: a digest of the call."""
    # A list, not a generator: join() builds one from a generator anyway.
    text = "\x1f".join(["" if p is None else str(p) for p in parts])
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Operations:
    """The state every operation reads; set up by ``BudgetManager``."""

    config: BudgetConfig
    keys: Keys
    _store: Store
    _clock: Clock | None
    _max_id: int
    _max_meta: int
    _retention_ms: int
    _windows: Windows | None
    #: the window time zone; ``None`` for UTC
    _zone: tzinfo | None
    #: the default caps as the scripts hold them, in the order of
    #: spendgate.config.DEFAULT_CAPS
    _defaults: tuple[str, ...]
    #: per-model caps are on (``model_caps``): admission and usage send the
    #: model to the scripts, which count and check it
    _model_caps: bool

    def _now_ms(self) -> int:
        if self._clock is None:
            return time.time_ns() // 1_000_000
        return to_ms(self._clock())

    def _windows_at(self, now_ms: int) -> Windows:
        w = self._windows
        if w is None or not (w.day_start_ms <= now_ms < w.day_end_ms):
            w = self._windows = windows_at(now_ms, self._zone)
        return w

    def _fact_head(self, now_ms: int, amount: int) -> tuple[Any, ...]:
        """ARGV[1..6] of record.lua and settle.lua: now, the day and month
        with their counters' TTLs, and the amount. Built here once for both;
        callers add their own with ``+`` (a tuple concatenation, cheaper than
        star-unpacking on the hot path)."""
        # Counter TTLs are relative to our clock: Redis's clock plays no part.
        w = self._windows_at(now_ms)
        retain_ms = self._retention_ms - now_ms
        return (
            now_ms,
            w.day,
            w.day_end_ms + retain_ms,
            w.month,
            w.month_end_ms + retain_ms,
            amount,
        )
