"""Leases: hold an estimate before the call, post the actual cost after it.

``reserve`` admits and holds (it may refuse), ``settle`` posts the hold at
its actual cost (a fact), ``release`` voids it. A hold stops counting on its
own once its TTL passes: no janitor is needed for correctness.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from spendgate.core.fact_keys import moved_home
from spendgate.core.ids import (
    check_id,
    check_model,
    check_optional_id,
    encode_metadata,
    user_id_of,
)
from spendgate.core.money import charge_micros
from spendgate.core.protocol import Reply
from spendgate.errors import (
    IdempotencyConflictError,
    InvalidArgumentError,
    LeaseStateError,
    StorageError,
)
from spendgate.errors.arguments import shown
from spendgate.models import Lease, SpendRecord
from spendgate.ops.admission import Admission
from spendgate.ops.base import fingerprint, new_id, text
from spendgate.ops.lease_context import LeaseContext
from spendgate.ops.settle_replies import (
    UNKNOWN_LEASE,
    settled_record,
    spooled_settle_record,
)
from spendgate.teams import TEAM_LEASE_MARK, team_of_lease

if TYPE_CHECKING:
    pass

_OK, _REFUSED, _REPLAYED, _CONFLICT = (
    int(Reply.OK),
    int(Reply.REFUSED),
    int(Reply.REPLAYED),
    int(Reply.CONFLICT),
)
_ESCROW = int(Reply.ESCROW)
#: the longest a hold may be asked for
_MAX_TTL_SECONDS = 7 * 86400


class Leases(Admission):
    """``reserve``, ``settle``, ``release`` and the ``lease`` context."""

    # (with a team, a call hands over to spendgate.ops.team_leases')
    _team_reserve: Callable[..., Awaitable[Lease]]
    _team_settle: Callable[..., Awaitable[SpendRecord]]
    _team_release: Callable[..., Awaitable[bool]]

    async def reserve(
        self,
        user_id: Any,
        amount: Any,
        project_id: str | None = None,
        ttl_seconds: int | None = None,
        idempotency_key: str | None = None,
        team_id: str | None = None,
        *,
        model: str | None = None,
    ) -> Lease:
        """Admit ``amount`` and hold it against every scope until settled,
        released, or ``ttl_seconds`` pass (then it stops counting by itself).

        :param ttl_seconds: defaults to ``lease_ttl_seconds`` from the config
        :param team_id: hold on that team's pool, not the user's balance
            (:mod:`spendgate.ops.team_leases`)
        :raise NotATeamMemberError: with ``team_id``, the user is not a member
        :param model: the model the call is for: with ``model_caps``, its
            per-model caps admit the hold too, the hold counts against them
            until it ends, and its settle counts at this model (the lease,
            and the hold's record, remember it)
        :raise BudgetExceededError: when a cap or the balance would be passed
        :raise BudgetUnavailableError: when the store did not answer (a lease
            is never granted without the store, even with ``fail_open``)
        :raise IdempotencyConflictError: a key reused with other arguments
        """
        if team_id is not None:
            return await self._team_reserve(
                user_id,
                amount,
                project_id,
                ttl_seconds,
                idempotency_key,
                team_id,
                model=model,
            )
        user_id = user_id_of(user_id, self._max_id)
        project = check_optional_id("project_id", project_id, self._max_id)
        requested = charge_micros(amount)
        ttl_ms = self._lease_ttl_ms(ttl_seconds)
        now_ms = self._now_ms()
        lease_id = self.keys.id_for(new_id(now_ms), user_id)
        keys = self.keys.of(user_id)
        ikey, digest = keys.hold(lease_id), ""  # no key: the hold's stands in
        if idempotency_key is not None:
            key = check_id("idempotency_key", idempotency_key, self._max_id)
            ikey = keys.caller_idempotency(key)
            digest = fingerprint("reserve", user_id, project, requested, ttl_ms)
            if model is not None:
                digest = fingerprint(digest, model)
        w = self._windows_at(now_ms)
        expires_ms = now_ms + ttl_ms
        args: tuple[Any, ...] = (now_ms, w.day, w.month, requested, user_id)
        args += (project or "", digest, lease_id, expires_ms)
        tail: tuple[Any, ...] = ()
        if self._model_caps:
            tail = (self._capped_model(model),)
        elif model is not None:
            check_model(model)
        # (what is left of the plan's allowance counts as balance)
        plan = self._plan_fast(user_id, self.config.enforce_balance)
        if plan is None:
            plan = await self._plan_arg(user_id, now_ms)
        sent = args + (plan,) + tail
        reply = await self._store.run("reserve", (ikey,), sent)
        code = reply[0]
        if code == _ESCROW:  # (sharded: its bucket borrows first)
            reply = await self._escrowed("reserve", (ikey,), sent, reply)
            code = reply[0]
        if code == Reply.STALE_PRICE:
            reply = await self._replan(
                "reserve", (ikey,), args, user_id, now_ms, reply, tail
            )
            code = reply[0]
        if code == _REFUSED:
            raise self._refusal(reply, user_id, project, requested, w)
        if code == _CONFLICT:
            raise IdempotencyConflictError(idempotency_key or "")
        if code == _REPLAYED:  # the first call's lease, not this one's
            lease_id, first_expiry = text(reply[1]).split("|")
            expires_ms = int(first_expiry)
        # Positional, in field order (id, user_id, project_id, amount_micros,
        # expires_ms, replayed): keywords cost the dataclass twice the time.
        lease = Lease(
            lease_id, user_id, project, requested, expires_ms, code == _REPLAYED
        )
        if model is not None:
            lease.model = model
        if self._plan_cache is not None:  # (no plans: nothing to remember)
            self._hold_taken(lease_id, user_id, expires_ms, now_ms)
        return lease

    async def reserve_up_to(
        self,
        user_id: Any,
        max_amount: Any,
        min_amount: Any = 0,
        project_id: str | None = None,
        ttl_seconds: int | None = None,
        idempotency_key: str | None = None,
        team_id: str | None = None,
        *,
        model: str | None = None,
    ) -> Lease:
        """Hold as much as fits, up to ``max_amount``: the smaller of
        ``max_amount`` and the tightest room left under every scope, window
        and (where enforced) the balance; refused when not even
        ``min_amount`` fits (TigerBeetle's balancing debit). One script.

        :param model: as :meth:`reserve`'s: the model's caps bound the hold too
        :return: the lease; ``lease.amount`` is what was granted
        :raise BudgetExceededError: ``min_amount`` does not fit (with
            ``min_amount`` 0: nothing is left at all)
        :raise InvalidArgumentError: ``min_amount`` above ``max_amount``
        :param team_id: on that team's pool, as :meth:`reserve`
        """
        if team_id is not None:
            return await self._team_reserve(
                user_id,
                min_amount,
                project_id,
                ttl_seconds,
                idempotency_key,
                team_id,
                max_amount,
                model,
            )
        user_id = user_id_of(user_id, self._max_id)
        project = check_optional_id("project_id", project_id, self._max_id)
        most, least = charge_micros(max_amount), charge_micros(min_amount)
        if least > most:
            raise InvalidArgumentError("min_amount is above max_amount")
        ttl_ms = self._lease_ttl_ms(ttl_seconds)
        now_ms = self._now_ms()
        lease_id = self.keys.id_for(new_id(now_ms), user_id)
        keys = self.keys.of(user_id)
        ikey, digest = keys.hold(lease_id), ""  # no key: the hold's stands in
        if idempotency_key is not None:
            key = check_id("idempotency_key", idempotency_key, self._max_id)
            ikey = keys.caller_idempotency(key)
            digest = fingerprint("upto", user_id, project, least, most, ttl_ms)
            if model is not None:
                digest = fingerprint(digest, model)
        w = self._windows_at(now_ms)
        args: tuple[Any, ...] = (now_ms, w.day, w.month, least, user_id)
        args += (project or "", digest, lease_id, now_ms + ttl_ms, most)
        tail: tuple[Any, ...] = ()
        if self._model_caps:
            tail = (self._capped_model(model),)
        elif model is not None:
            check_model(model)
        plan = self._plan_fast(user_id, self.config.enforce_balance)
        if plan is None:
            plan = await self._plan_arg(user_id, now_ms)
        sent = args + (plan,) + tail
        reply = await self._store.run("reserve_up_to", (ikey,), sent)
        code = reply[0]
        if code == _ESCROW:  # (sharded: its bucket borrows first)
            reply = await self._escrowed("reserve_up_to", (ikey,), sent, reply)
            code = reply[0]
        if code == Reply.STALE_PRICE:
            reply = await self._replan(
                "reserve_up_to", (ikey,), args, user_id, now_ms, reply, tail
            )
            code = reply[0]
        if code == _REFUSED:
            raise self._refusal(reply, user_id, project, least, w)
        if code == _CONFLICT:
            raise IdempotencyConflictError(idempotency_key or "")
        lease_id, expires, granted = text(reply[1]).split("|")
        lease = Lease(
            lease_id, user_id, project, int(granted), int(expires), code == _REPLAYED
        )
        if model is not None:
            lease.model = model
        if self._plan_cache is not None:
            self._hold_taken(lease_id, user_id, lease.expires_ms, now_ms)
        return lease

    def _lease_ttl_ms(self, ttl_seconds: object) -> int:
        if ttl_seconds is None:
            return self.config.lease_ttl_seconds * 1000
        if isinstance(ttl_seconds, bool) or not isinstance(
            ttl_seconds, int | float | Decimal
        ):
            raise InvalidArgumentError(
                f"ttl_seconds must be a number, not {type(ttl_seconds).__name__}"
            )
        if isinstance(ttl_seconds, Decimal) and not ttl_seconds.is_finite():
            # (a Decimal NaN cannot even be compared)
            raise InvalidArgumentError(f"ttl_seconds must be finite, not {ttl_seconds}")
        if not (0 < ttl_seconds <= _MAX_TTL_SECONDS):
            raise InvalidArgumentError(
                "ttl_seconds must be above 0 and at most 7 days, "
                f"not {shown(ttl_seconds)}"
            )
        return max(1, int(ttl_seconds * 1000))

    def lease(
        self,
        user_id: Any,
        estimate: Any,
        project_id: str | None = None,
        ttl_seconds: int | None = None,
        idempotency_key: str | None = None,
        team_id: str | None = None,
        *,
        model: str | None = None,
    ) -> LeaseContext:
        """Reserve ``estimate`` for the body of an ``async with`` block.

        Set ``lease.actual_cost`` inside the block: on a normal exit the lease
        is settled at that cost (at the estimate when it was not set, so spend
        is never under-counted); on an exception it is released. ``model``
        is :meth:`reserve`'s.
        """
        return LeaseContext(
            self,
            user_id,
            estimate,
            project_id,
            ttl_seconds,
            idempotency_key,
            team_id,
            model=model,
        )

    async def settle(
        self,
        lease: Lease | str,
        actual_cost: Any,
        model: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> SpendRecord:
        """Post a lease at its actual cost: the hold stops counting and the
        cost is charged (a fact, even above the estimate, even after expiry —
        then marked ``late``). Settling again at the same cost returns the
        first record.

        :param lease: the :class:`Lease` or its id (by id, the hold's user
            is looked up in :mod:`spendgate.plans.holders`)
        :param model: the model the cost is for; ``None``: the lease's (the
            one it was reserved for, if any: with ``model_caps`` the hold's
            record remembers it, so a settle by lease id counts at it too)
        :raise LeaseStateError: the lease was released, or is unknown
        :raise IdempotencyConflictError: it was already settled at another cost
        """
        lease_id = lease.id if isinstance(lease, Lease) else lease
        if type(lease_id) is str and lease_id[28:29] == TEAM_LEASE_MARK:
            team = team_of_lease(lease_id)
            if team is not None:
                return await self._team_settle(
                    lease, lease_id, team, actual_cost, model, metadata
                )
        lease_id = check_id("lease_id", lease_id, self._max_id)
        amount = charge_micros(actual_cost)
        if model is None and isinstance(lease, Lease):
            model = lease.model
        # (None is checked here: most facts carry neither, and a call is not free)
        model_name = None if model is None else check_model(model)
        meta = "" if metadata is None else encode_metadata(metadata, self._max_meta)
        now_ms = self._now_ms()
        entry_id = self.keys.id_like(new_id(now_ms), lease_id)
        head = self._fact_head(now_ms, amount)
        args = (*head, entry_id, model_name or "", meta, lease_id)
        # The plan's allowance of the hold's user: "=" (no plan expected)
        # unless the user is known to have one; the script names the user
        # when not (see lua/_allowance.lua). By id, the user is the one this
        # manager remembers for the hold, if any (spendgate.plans.holders).
        if isinstance(lease, Lease):
            user = lease.user_id
        else:
            user = self._hold_user(lease_id, now_ms)
        plan = self._plan_fast(user)
        if plan is None:
            plan = await self._plan_arg(user, now_ms)
        keys = (self.keys.of_id(lease_id).hold(lease_id),)

        def info() -> dict[str, Any]:
            return {"kind": "settle", "entry": entry_id, "lease": lease_id}

        reply = await self._store.run("settle", keys, args + (plan,), spool_info=info)
        if reply is not None and reply[0] == Reply.MOVED:
            # a rebucketing moved the (finished) hold to its user's bucket:
            # there, with an entry id of that bucket (its refund finds it)
            home = moved_home(self.keys, reply[1])
            keys, entry_id = (home.hold(lease_id),), self.keys.id_in(entry_id, home)
            args = (*head, entry_id, model_name or "", meta, lease_id)
            reply = await self._store.run(
                "settle", keys, args + (plan,), spool_info=info
            )
        if reply is not None and reply[0] == Reply.STALE_PRICE:
            reply = await self._replan(
                "settle", keys, args, user, now_ms, reply, spool_info=info
            )
        if self._hold_users is not None:  # (the hold has ended)
            self._hold_users.forget(lease_id)
        if reply is None:  # spooled: a repeated settle at one cost is a replay
            return spooled_settle_record(
                lease, lease_id, entry_id, amount, model_name, now_ms
            )
        record = settled_record(reply, lease_id, entry_id, amount, model_name, now_ms)
        if len(reply) > 7 and reply[7]:  # (sharded: spends past its allowance)
            await self._counted(self.keys.of_key(keys[0]), reply[7])
        return record

    async def release(self, lease: Lease | str) -> bool:
        """Void a lease: its hold stops counting at once, nothing is charged.

        :return: ``True`` when a counting hold was released; ``False`` when it
            had already been released or had expired
        :raise LeaseStateError: the lease was settled, or is unknown
        """
        lease_id = lease.id if isinstance(lease, Lease) else lease
        if type(lease_id) is str and lease_id[28:29] == TEAM_LEASE_MARK:
            team = team_of_lease(lease_id)
            if team is not None:
                return await self._team_release(lease_id, team)
        lease_id = check_id("lease_id", lease_id, self._max_id)
        reply = await self._store.run(
            "release", (self.keys.of_id(lease_id).hold(lease_id),), (lease_id,)
        )
        if reply[0] == Reply.MOVED:  # (a rebucketing moved the finished hold)
            moved = moved_home(self.keys, reply[1]).hold(lease_id)
            reply = await self._store.run("release", (moved,), (lease_id,))
        if self._hold_users is not None:  # (the hold has ended)
            self._hold_users.forget(lease_id)
        if reply[0] == Reply.UNKNOWN_LEASE:
            raise LeaseStateError(lease_id, UNKNOWN_LEASE, "release")
        if reply[0] == Reply.MOVED:  # (followed once: moves once per rebucketing)
            raise StorageError(f"the hold of {lease_id} moved again")
        if reply[0] == Reply.LEASE_SETTLED:
            raise LeaseStateError(lease_id, "settled", "release")
        return bool(reply[1])
