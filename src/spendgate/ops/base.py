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
from collections.abc import Awaitable, Callable
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any

from spendgate.core.protocol import Reply
from spendgate.core.windows import Windows, to_ms, windows_at
from spendgate.errors import ShardedRefusalError, StorageError

if TYPE_CHECKING:
    from spendgate.config import BudgetConfig
    from spendgate.core.keys import Keys
    from spendgate.core.store import Store
    from spendgate.plans.cache import PlanCache
    from spendgate.plans.holders import HoldUsers

Clock = Callable[[], datetime]

#: times a call is sent in all when its script finds the user's plan is not
#: the one expected (lua/_allowance.lua)
PLAN_ATTEMPTS = 3


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
    #: the plans and the users' plans as last read (spendgate.ops.plans)
    _plan_cache: PlanCache | None = None
    #: whose hold a lease id is, for the holds of plan users this manager
    #: took or extended (``None`` until the first: no plan, no map)
    _hold_users: HoldUsers | None = None
    #: per-model caps are on (``model_caps``): admission and usage send the
    #: model to the scripts, which count and check it
    _model_caps: bool
    #: a call again once its bucket borrowed what its ``ESCROW`` answer
    #: lacks (spendgate.ops.escrow_admission.Escrowing, the admitting
    #: operations' base)
    _escrowed: Callable[..., Awaitable[Any]]

    def _decided_in_one_bucket(self, what: str, why: str) -> None:
        """Refuse ``what`` on a sharded deployment, where each call is decided
        in its user's bucket (spendgate.core.shards); ``why`` says what no
        one bucket can see.

        :raise ShardedRefusalError: ``cluster_buckets`` > 1
        """
        if self.config.cluster_buckets > 1:
            raise ShardedRefusalError(
                f"{what} with cluster_buckets={self.config.cluster_buckets}:"
                f" each call is decided in its user's bucket, and {why}"
            )

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

    # -- a plan's allowance (lua/_allowance.lua) -------------------------------

    def _plan_fast(self, user: str, needed: bool = True) -> str | None:
        """The plan argument when it is known without a wait: ``""`` when
        not ``needed`` (an admission where balances are not enforced: the
        allowance plays no part), ``"="`` for a user not known to have a
        plan (the common case: the script checks it with one GET); ``None``
        when :meth:`_plan_arg` must make it."""
        if not needed:
            return ""
        cache = self._plan_cache
        if cache is None or not cache.guess(user):
            return "="
        return None

    async def _plan_arg(self, user: str, now_ms: int, lenient: bool = False) -> str:
        """The plan argument of a charge or an admission of ``user``:
        ``"="`` (``"~"`` when ``lenient``), no plan expected. The manager's
        :class:`~spendgate.ops.plans.Plans` knows the plans and sends what the
        user's plan makes of the allowance."""
        return "~" if lenient else "="

    def _remember_plan(self, user: str, assignment: str) -> None:
        """The user's plan, as a script just answered it."""
        cache = self._plan_cache
        if cache is None:
            from spendgate.plans.cache import PlanCache

            cache = self._plan_cache = PlanCache()
        cache.remember(user, assignment)

    def _hold_taken(
        self, lease_id: str, user: str, expires_ms: int, now_ms: int
    ) -> None:
        """Remember the user of a hold just taken or extended, when that user
        is known to have a plan: a settle or an extend by lease id then sends
        the user's plan argument (one round trip, not two). Callers check
        ``_plan_cache`` first: without plans, nothing is done at all."""
        cache = self._plan_cache
        if cache is None or not cache.guess(user):
            return
        holds = self._hold_users
        if holds is None:
            from spendgate.plans.holders import HoldUsers

            holds = self._hold_users = HoldUsers()
        holds.remember(lease_id, user, expires_ms, now_ms)

    def _hold_user(self, lease_id: str, now_ms: int) -> str:
        """The user of a hold given by id, as this manager knows it (``""``:
        not known; the script names the user when it has a plan)."""
        holds = self._hold_users
        return "" if holds is None else holds.user(lease_id, now_ms)

    async def _replan(
        self,
        operation: str,
        keys: tuple[str, ...],
        head: tuple[Any, ...],
        user: str,
        now_ms: int,
        reply: Any,
        tail: tuple[Any, ...] = (),
        **options: Any,
    ) -> Any:
        """The call again after its script answered ``STALE_PRICE`` (the
        user's plan is not the one expected; settle's answer names the
        hold's user too): the plan argument (after ``head``, before the
        hooked ``tail``) made again for the user's plan, up to
        :data:`PLAN_ATTEMPTS` tries in all, the last one lenient (it draws
        no allowance rather than answer again).

        :raise StorageError: the plan kept changing (only a canned answer
            does that)
        """
        for attempt in range(1, PLAN_ATTEMPTS):
            if len(reply) > 2:
                user = text(reply[1])
            self._remember_plan(user, text(reply[-1]))
            lenient = attempt == PLAN_ATTEMPTS - 1
            plan = await self._plan_arg(user, now_ms, lenient)
            args = head + (plan,) + tail
            reply = await self._store.run(operation, keys, args, **options)
            if reply is not None and reply[0] == Reply.ESCROW:
                reply = await self._escrowed(operation, keys, args, reply, **options)
            if reply is None or reply[0] != Reply.STALE_PRICE:
                return reply
        raise StorageError(f"the user's plan kept changing during a {operation}")
