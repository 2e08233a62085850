"""Admission against a project's or the platform's cap on a sharded deployment.

A bucket admits against what the root lent it of such a daily or monthly
cap (``lua/_escrow.lua``), not against the cap: the admitting scripts answer
``ESCROW`` naming each scope and window short of it, having changed
nothing. :meth:`Escrowing._escrowed` then borrows for each
(:mod:`spendgate.ops.escrow`): the root lends the shortfall, at least
``escrow_chunk``, at most what it has not lent; the loan is deposited in
the bucket; the call is made again. When the root has too little left, the
other buckets give back what they neither spent nor hold, and the root
lends again (once this manager's loans on their way to other buckets have
landed, if it found nothing). Only when even that falls short is the call
refused, as at the cap.

What this guarantees: the root never lends more than the cap, a bucket never
admits more than it was lent, so admissions never take a scope past its
cap. What it costs: one round trip as before, and three more (lend, deposit,
again) for the call that finds its bucket short, about one call in
``escrow_chunk / amount``. What it gives up: lent but unused allowance sits
in other buckets until a short bucket takes it back (under-admission, never
over), and a loan or a take-back cut off by a crash stays lent for the
rest of the window (at most one chunk per call cut off). A fact
(``record``, ``settle`` above its hold) is never refused: what it takes its
bucket past its allowance, which its script answers, is borrowed right
after it (:meth:`_counted`), so no other bucket admits it again.

A scope and window whose borrowing found nothing left is refused at once,
without borrowing, for :data:`QUIET_MS` (by this manager): while the
cap is spent, a refusal costs one round trip, not a sweep of every bucket.
"""

from __future__ import annotations

import asyncio
from typing import Any

from loguru import logger

from spendgate.core.keys import Keys
from spendgate.core.money import limit_micros
from spendgate.core.protocol import Reply, WindowCode
from spendgate.errors import BudgetUnavailableError, StorageError
from spendgate.ops import escrow
from spendgate.ops.base import Operations, new_id, text

__all__ = ["QUIET_MS", "Escrowing"]

#: how long a scope and window found spent is refused without borrowing, ms
#: (by the manager's clock)
QUIET_MS = 250
#: scopes (and windows) whose sweeps and spent marks are kept before the
#: idle or ended ones are dropped
_KEPT = 1024
#: times a call is sent again after borrowing before it is refused
ROUNDS = 8
#: the values of one short scope in an ``ESCROW`` answer
_GROUP = 9
#: how long escrow's hashes outlive their window, ms (a late call of the
#: window still finds its loans)
_MARGIN_MS = 3_600_000


class _Gate:
    """One bucket's borrowing in this manager: one borrower at a time, for
    itself and the calls waiting behind it."""

    __slots__ = ("lock", "waiting")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        #: calls waiting for the borrower to finish
        self.waiting = 0


class Escrowing(Operations):
    """Borrowing for the admitting operations that their bucket answered
    ``ESCROW`` (a sharded deployment only)."""

    #: (scope, scope id, window id) -> when borrowing for it is tried again
    #: (ms, the manager's clock): found spent
    _spent_until: dict[tuple[str, str, str], int] | None = None
    #: each bucket's borrowing (by its base)
    _gates: dict[str, _Gate] | None = None
    #: (scope, scope id, window id) -> its take-backs, one at a time
    _sweeps: dict[tuple[str, str, str], asyncio.Lock] | None = None
    #: (scope, scope id, window id) -> its loans on their way to a bucket
    #: (:meth:`_lend`), each done once deposited (or failed)
    _landing: dict[tuple[str, str, str], set[asyncio.Future[None]]] | None = None

    async def _escrowed(
        self,
        operation: str,
        keys: tuple[str, ...],
        args: tuple[Any, ...],
        reply: list[Any],
        **options: Any,
    ) -> Any:
        """The call again once its bucket borrowed what ``reply`` (its
        ``ESCROW`` answer) says it lacks; a ``REFUSED`` answer when the
        cap is spent (or the call kept finding its bucket short).

        Calls of one bucket short at once borrow once: the first borrows
        for itself and for every call then waiting behind it (as much
        again for each), and the waiting ones are sent again once it has.
        """
        bucket = self.keys.of_key(keys[0])
        gates = self._gates
        if gates is None:
            gates = self._gates = {}
        gate = gates.get(bucket.base)
        if gate is None:
            gate = gates[bucket.base] = _Gate()
        for _ in range(ROUNDS):
            count = (len(reply) - 1) // _GROUP
            # (what follows the groups, extend's user and project, follows
            # a refusal too)
            after = reply[1 + count * _GROUP :]
            if gate.lock.locked():  # another call borrows: wait, then again
                gate.waiting += 1
                try:
                    async with gate.lock:
                        pass
                finally:
                    gate.waiting -= 1
            else:
                async with gate.lock:
                    shorts = [
                        reply[1 + i * _GROUP : 1 + (i + 1) * _GROUP]
                        for i in range(count)
                    ]
                    share = 1 + gate.waiting
                    found = await asyncio.gather(
                        *(self._borrow_one(bucket, s, share) for s in shorts)
                    )
                refusal = next((r for r in found if r is not None), None)
                if refusal is not None:
                    return refusal + after
            reply = await self._store.run(operation, keys, args, **options)
            if reply is None or reply[0] != Reply.ESCROW:
                return reply
        return self._spent(reply[1 : 1 + _GROUP], 0, 0) + after

    async def _counted(self, bucket: Keys, deficits: list[Any]) -> None:
        """After a fact (sharded): what it took its bucket past the
        allowance of a project's or the platform's cap (``deficits``, as
        ``record`` and ``settle`` answer it: ``lua/_escrow.lua``) is
        borrowed at once, so the root counts it and no other bucket admits
        it again. The fact stands whatever happens here: a store failure
        leaves the excess to the bucket's next borrowing (logged)."""
        shorts = [deficits[at : at + _GROUP] for at in range(0, len(deficits), _GROUP)]
        try:
            await asyncio.gather(*(self._borrow_one(bucket, s, 1) for s in shorts))
        except (BudgetUnavailableError, StorageError) as exc:
            logger.debug("spendgate: a fact's excess is borrowed later: {}", exc)

    async def _borrow_one(
        self, bucket: Keys, short: list[Any], share: int
    ) -> list[Any] | None:
        """Borrow what one scope and window lacks, ``share`` times over
        (for the calls waiting too); its refusal when not even this call's
        shortfall can be lent."""
        _, window_code, cap, shortfall, _, _, _, sid, window = short
        scope_id, window_id = text(sid), text(window)
        scope = "project" if scope_id else "global"
        spent_key = (scope, scope_id, window_id)
        quiet = self._spent_until
        if quiet is not None and quiet.get(spent_key, 0) > self._now_ms():
            return self._spent(short, 0, 0)
        ttl_ms = self._escrow_ttl_ms(window_id)
        want = shortfall * share
        loan = await self._lend(
            bucket, scope, scope_id, window_id, cap, want, self._escrow_chunk, ttl_ms
        )
        if loan.amount >= want:
            return None
        # The root has too little left: what the other buckets neither spent
        # nor hold goes back to it, and it lends again.
        async with self._sweep_lock(spent_key):
            got = loan.amount
            more = await self._lend(
                bucket, scope, scope_id, window_id, cap, want - got, 0, ttl_ms
            )
            got += more.amount
            taken = 0
            for _ in range(ROUNDS):  # (bounded as a call's rounds are)
                if got >= want:
                    break
                taken += await self._take_back(
                    bucket, scope, scope_id, window_id, window_code
                )
                more = await self._lend(
                    bucket, scope, scope_id, window_id, cap, want - got, 0, ttl_ms
                )
                got += more.amount
                # (nothing found, but loans of this manager's were on their
                # way to other buckets: landed now, they are there to take)
                if got or taken or not await self._landed(spent_key):
                    break
        if got >= shortfall:
            return None
        if got == 0 and taken == 0:  # nothing lent, nothing unused: spent
            now_ms = self._now_ms()
            if quiet is None:
                quiet = self._spent_until = {}
            elif len(quiet) > _KEPT:  # (the ended ones go)
                for ended in [k for k, until in quiet.items() if until <= now_ms]:
                    del quiet[ended]
            quiet[spent_key] = now_ms + QUIET_MS
        return self._spent(short, more.lent, got)

    def _sweep_lock(self, spent_key: tuple[str, str, str]) -> asyncio.Lock:
        """One sweep of a scope and window at a time (in this manager): two
        at once would each take back what the other was just lent."""
        sweeps = self._sweeps
        if sweeps is None:
            sweeps = self._sweeps = {}
        sweep = sweeps.get(spent_key)
        if sweep is None:
            if len(sweeps) > _KEPT:  # (those of past windows go, idle)
                for idle in [k for k, lock in sweeps.items() if not lock.locked()]:
                    del sweeps[idle]
            sweep = sweeps[spent_key] = asyncio.Lock()
        return sweep

    async def _lend(
        self,
        bucket: Keys,
        scope: str,
        scope_id: str,
        window_id: str,
        cap: int,
        shortfall: int,
        chunk: int,
        ttl_ms: int,
    ) -> escrow.Loan:
        """One loan of the root's, deposited in ``bucket``; on its way
        (:meth:`_landed`) from the loan's request to its deposit."""
        loan_id = new_id(self._now_ms())
        landing = self._landing
        if landing is None:
            landing = self._landing = {}
        key = (scope, scope_id, window_id)
        flight: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        landing.setdefault(key, set()).add(flight)
        try:
            loan = await escrow.lend(
                self._store,
                self.keys,
                scope,
                scope_id,
                window_id,
                cap=cap,
                shortfall=shortfall,
                chunk=chunk,
                ttl_ms=ttl_ms,
                loan_id=loan_id,
            )
            if loan.amount:
                await escrow.deposit(
                    self._store,
                    bucket,
                    scope,
                    scope_id,
                    window_id,
                    amount=loan.amount,
                    loan_id=loan_id,
                    ttl_ms=ttl_ms,
                )
        finally:
            flights = landing[key]
            flights.discard(flight)
            if not flights:
                del landing[key]
            flight.set_result(None)
        return loan

    async def _landed(self, key: tuple[str, str, str]) -> bool:
        """Whether loans of a scope and window were on their way from the
        root to a bucket (:meth:`_lend`), awaited then: a take-back before
        one lands finds nothing of it, and a refusal then would leave its
        unused part in that bucket."""
        flights = self._landing.get(key) if self._landing is not None else None
        if not flights:
            return False
        await asyncio.wait(list(flights))
        return True

    async def _take_back(
        self, bucket: Keys, scope: str, scope_id: str, window_id: str, window_code: int
    ) -> int:
        """What every other bucket neither spent nor holds of the scope in
        the window, given back to the root (all buckets at once); answers
        how much."""

        async def one(other: Keys) -> int:
            if window_code == WindowCode.DAILY:
                spent_key = other.day(window_id, scope, scope_id)
            else:
                spent_key = other.month(window_id, scope, scope_id)
            taken_id = new_id(self._now_ms())
            taken = await escrow.reclaim(
                self._store,
                other,
                scope,
                scope_id,
                window_id,
                spent_key=spent_key,
                reclaim_id=taken_id,
                now_ms=self._now_ms(),
            )
            if taken:
                await escrow.give_back(
                    self._store,
                    self.keys,
                    scope,
                    scope_id,
                    window_id,
                    amount=taken,
                    return_id=taken_id,
                )
            return taken

        others = [b for b in self.keys.buckets() if b is not bucket]
        return sum(await asyncio.gather(*(one(b) for b in others)))

    @staticmethod
    def _spent(short: list[Any], lent: int, deposited: int) -> list[Any]:
        """The ``REFUSED`` answer of a scope short of allowance that could
        not borrow enough: the cap as its limit; as spent, what the bucket
        spent and what the root lent (``lent``, 0: not known) beyond the
        bucket's allowance, ``deposited`` included (the others' spend and
        holds, and what they were lent and have not used)."""
        index, window_code, cap, _, used, held, allowance = (int(v) for v in short[:7])
        beyond = lent - allowance - deposited
        spent = min(cap, used + max(beyond, 0))
        return [Reply.REFUSED, index, window_code, cap, spent, held]

    def _escrow_ttl_ms(self, window_id: str) -> int:
        """How long escrow's hashes of a window are kept from now: to the
        window's end, and an hour more."""
        now_ms = self._now_ms()
        w = self._windows_at(now_ms)
        if window_id == w.day:
            return w.day_end_ms - now_ms + _MARGIN_MS
        if window_id == w.month:
            return w.month_end_ms - now_ms + _MARGIN_MS
        return _MARGIN_MS  # (a window just ended: a late call of it)

    @property
    def _escrow_chunk(self) -> int:
        return limit_micros(self.config.escrow_chunk)
