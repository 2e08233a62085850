"""Streaming holds: ``extend`` tops a live lease up while its call runs.

A streamed completion's cost grows chunk by chunk: rather than hold the
worst case up front, a caller holds a first step and extends the lease as
output accrues. Each extension is admitted like a reserve of the same amount
(the lease's own hold already counts), in one script; a refusal changes
nothing, and the caller cuts the stream and settles what was used.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from spendgate.core.fact_keys import moved_home
from spendgate.core.ids import check_id
from spendgate.core.money import charge_micros
from spendgate.core.protocol import Reply
from spendgate.core.windows import Windows
from spendgate.errors import IdempotencyConflictError, LeaseStateError, StorageError
from spendgate.models import Lease
from spendgate.ops.base import fingerprint, text
from spendgate.ops.leases import Leases
from spendgate.teams import TEAM_LEASE_MARK, team_of_lease

_OK, _REFUSED, _REPLAYED, _CONFLICT = (
    int(Reply.OK),
    int(Reply.REFUSED),
    int(Reply.REPLAYED),
    int(Reply.CONFLICT),
)
#: what a lease that cannot be extended is, by the script's reply
_STATES = {
    int(Reply.UNKNOWN_LEASE): "unknown (never granted, or forgotten)",
    int(Reply.LEASE_RELEASED): "released",
    int(Reply.LEASE_SETTLED): "settled",
    int(Reply.LEASE_EXPIRED): "expired",
}


class Extensions(Leases):
    """The lease operations, and ``extend``."""

    # (a team lease's hands over to spendgate.ops.team_extend's)
    _team_extend: Callable[..., Awaitable[Lease]]

    async def extend(
        self,
        lease: Lease | str,
        more: Any,
        ttl_seconds: int | None = None,
        idempotency_key: str | None = None,
    ) -> Lease:
        """Top a live hold up by ``more``, atomically, under the admission
        rule of :meth:`reserve`: for every scope and window, spent + held
        (this hold included) + ``more`` must stay within the cap, and the
        balance above ``min_balance`` where enforced, what is left of the
        user's plan allowance counting as balance. A refusal changes
        nothing. Settling the lease later charges the actual cost as usual
        (the allowance first, then grants and the balance).

        A lease on a team's pool (``team_id=`` on ``reserve``) grows under
        the team reserve's rule for ``more`` instead: the user's caps (not
        their balance or allowance), the model's at the lease's model, the
        member's caps on the team and the pool, in one round trip
        (:mod:`spendgate.ops.team_extend`).

        Without an ``idempotency_key`` each call adds ``more``; with one, a
        retried call adds it once and answers the first call's result (the
        hold's amount and expiry right after it).

        :param lease: the :class:`Lease` or its id; a ``Lease`` is updated in
            place (``amount``, ``expires_at``, ``replayed``) and returned
        :param more: the amount to add; 0 adds nothing and is always admitted
        :param ttl_seconds: when given, the hold now expires ``ttl_seconds``
            from now, unless it already expires later (a hold never shortens)
        :return: the lease with its new amount; ``replayed`` says whether
            this call was an idempotent replay
        :raise BudgetExceededError: a cap or the balance would be passed
        :raise LeaseStateError: the lease is unknown, settled, released or
            expired
        :raise IdempotencyConflictError: a key reused with other arguments
        :raise NotATeamMemberError: a lease on a team's pool whose user is
            no longer the team's member (it still settles and releases)
        :raise BudgetUnavailableError: the store did not answer (never
            extended without it, even with ``fail_open``)
        """
        lease_id = lease.id if isinstance(lease, Lease) else lease
        if type(lease_id) is str and lease_id[28:29] == TEAM_LEASE_MARK:
            team = team_of_lease(lease_id)
            if team is not None:
                return await self._team_extend(
                    lease, lease_id, team, more, ttl_seconds, idempotency_key
                )
        lease_id = check_id("lease_id", lease_id, self._max_id)
        sent = self._extension("extend", lease_id, more, ttl_seconds, idempotency_key)
        now_ms, requested, w = sent.args[0], sent.args[3], sent.windows
        # What is left of the plan's allowance counts as balance, as for a
        # reserve: "=" (no plan expected) unless the hold's user is known to
        # have one; the script names the user when not (lua/_allowance.lua).
        # Nothing added, or balances not enforced: nothing is read. By id,
        # the user is the one this manager remembers for the hold, if any.
        if isinstance(lease, Lease):
            user = lease.user_id
        else:
            user = self._hold_user(lease_id, now_ms)
        plan = self._plan_fast(user, requested > 0 and self.config.enforce_balance)
        if plan is None:
            plan = await self._plan_arg(user, now_ms)
        keys, args = sent.keys, sent.args
        reply = await self._store.run("extend", keys, args + (plan,))
        if reply[0] == Reply.MOVED:  # (a rebucketing moved the finished hold:
            # its state answers there, by the hold's key alone)
            keys = (moved_home(self.keys, reply[1]).hold(lease_id),) * 2
            reply = await self._store.run("extend", keys, args + (plan,))
        if reply[0] == Reply.ESCROW:  # (sharded: its bucket borrows first)
            reply = await self._escrowed("extend", keys, args + (plan,), reply)
        if reply[0] == Reply.STALE_PRICE:
            reply = await self._replan("extend", keys, args, user, now_ms, reply)
        code = reply[0]
        if code == _REFUSED:
            # (user and project come last, after a minute refusal's free_ms)
            user, project = text(reply[-2]), text(reply[-1])
            raise self._refusal(reply[:-2], user, project or None, requested, w)
        if code not in (_OK, _REPLAYED):
            if code != _CONFLICT and self._hold_users is not None:
                self._hold_users.forget(lease_id)
            raise not_extended(code, lease_id, idempotency_key)
        grown = extended(lease, lease_id, reply)
        if self._plan_cache is not None:  # (the answer names the hold's user)
            self._hold_taken(lease_id, text(reply[2]), grown.expires_ms, now_ms)
        return grown

    def _extension(
        self,
        operation: str,
        lease_id: str,
        more: Any,
        ttl_seconds: int | None,
        idempotency_key: str | None,
    ) -> Extension:
        """What an extend of ``lease_id`` by ``more`` sends (its ``operation``
        names its fingerprint): the hold's key and the idempotency key (the
        hold's again for none, as extend.lua takes it) and ARGV but what
        follows the new expiry."""
        requested = charge_micros(more)
        ttl_ms = None if ttl_seconds is None else self._lease_ttl_ms(ttl_seconds)
        keys = self.keys.of_id(lease_id)
        hkey = keys.hold(lease_id)
        ikey, digest = hkey, ""
        if idempotency_key is not None:
            key = check_id("idempotency_key", idempotency_key, self._max_id)
            ikey = keys.caller_idempotency(key)
            digest = fingerprint(operation, lease_id, requested, ttl_ms)
        now_ms = self._now_ms()
        w = self._windows_at(now_ms)
        expires = "" if ttl_ms is None else now_ms + ttl_ms
        args = (now_ms, w.day, w.month, requested, lease_id, digest, expires)
        return Extension((hkey, ikey), args, w)


class Extension(NamedTuple):
    """What an extend sends (:meth:`Extensions._extension`)."""

    #: the hold's key, the idempotency key
    keys: tuple[str, str]
    #: now_ms, day, month, requested, lease id, fingerprint, new expiry
    args: tuple[Any, ...]
    #: the windows of now_ms
    windows: Windows


def not_extended(code: int, lease_id: str, idempotency_key: str | None) -> Exception:
    """Why an extend's script did not grow the hold, by its reply code: a
    key reused with other arguments, or the lease's state."""
    if code == _CONFLICT:
        return IdempotencyConflictError(idempotency_key or "")
    if code == Reply.MOVED:  # (followed once: moves once per rebucketing)
        return StorageError(f"the hold of {lease_id} moved again")
    return LeaseStateError(lease_id, _STATES[code], "extend")


def extended(
    lease: Lease | str, lease_id: str, reply: Any, team: str | None = None
) -> Lease:
    """The lease after an extend's OK or REPLAYED answer ("amount|expires_ms",
    the hold's user, its project): a :class:`Lease` given is updated in
    place and returned, for an id a new one (on ``team``'s pool, if any)."""
    amount, expires_ms = text(reply[1]).split("|")
    replayed = reply[0] == _REPLAYED
    if isinstance(lease, Lease):
        lease.amount_micros = int(amount)
        lease.expires_ms = int(expires_ms)
        lease.replayed = replayed
        return lease
    user, project = text(reply[2]), text(reply[3])
    grown = Lease(
        lease_id, user, project or None, int(amount), int(expires_ms), replayed
    )
    if team is not None:
        grown.team_id = team
    return grown
