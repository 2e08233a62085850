"""Prepaid credits: grants, the balance they make up, and their expiry.

``add_credits`` makes a grant (``lua/credit.lua``); every charge draws on a
user's grants in order inside its own script (``lua/_grants.lua``), and a
grant stops counting at its expiry with no sweeper: the first call of the
user's that finds it expired writes its ``expire`` entry. The sweep
(``lua/grants_sweep.lua``) does the same for users who make no call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from spendgate.core.ids import encode_metadata, user_id_of
from spendgate.core.money import credit_micros, from_micros
from spendgate.core.protocol import GRANT_NEVER_MS, Reply
from spendgate.core.windows import from_ms, to_ms
from spendgate.errors import IdempotencyConflictError, InvalidArgumentError
from spendgate.errors.arguments import shown
from spendgate.models import Balance, Grant, SpendRecord, SweepReport
from spendgate.ops.base import fingerprint, new_id, text
from spendgate.ops.facts import Facts

_REPLAYED, _CONFLICT = int(Reply.REPLAYED), int(Reply.CONFLICT)

#: the most grants :meth:`Credits.get_balance` lists (the first in draw order)
GRANTS_LISTED = 1000
#: a grant's kind: a short word (it is part of the grant's name in Redis)
_GRANT_KIND = re.compile(r"[A-Za-z0-9_.-]{1,32}")
#: the priorities a grant may have
PRIORITY_RANGE = (-1_000_000_000, 1_000_000_000)
#: metadata keys add_credits writes itself
_RESERVED_METADATA = "grant"


class Credits(Facts):
    """``add_credits``, ``get_balance`` and ``sweep_expired_credits``."""

    async def add_credits(
        self,
        user_id: Any,
        amount: Any,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        expires_at: datetime | None = None,
        priority: int = 0,
        kind: str = "purchase",
    ) -> SpendRecord:
        """Grant prepaid credits to a user (rounded down): a fact.

        The grant first pays what the user owes (a balance that went negative
        when a charge found no credits), then is drawn on by charges in its
        turn: lower ``priority`` first, then the earliest ``expires_at``
        (never-expiring last), then the oldest. Its id is the entry id.

        :param expires_at: when the grant stops counting (an aware
            ``datetime``, after now); ``None``: never
        :param priority: an integer; lower is drawn on first (a promotional
            grant at 0 before a paid one at 1)
        :param kind: what the grant is (``"purchase"``, ``"promo"``...): up to
            32 letters, digits, ``_ . -``
        :return: the record, with the new ``balance``
        :raise IdempotencyConflictError: a key reused with other arguments
        :raise InvalidArgumentError: a past expiry, a priority or kind not
            as above, or metadata using the key ``"grant"``
        """
        user_id = user_id_of(user_id, self._max_id)
        micros = credit_micros(amount)
        now_ms = self._now_ms()
        # (a past expiry is let through with a key: it may be the retry of a
        # grant made before its expiry, which the script answers)
        expires_ms = _expires_ms(expires_at, now_ms, idempotency_key is not None)
        priority = _priority(priority)
        kind = _grant_kind(kind)
        meta = _grant_metadata(metadata, kind, priority, expires_ms, self._max_meta)
        entry_id = self.keys.id_for(new_id(now_ms), user_id)
        key, ikey = self._idempotency(idempotency_key, entry_id)
        expiry = "" if expires_ms is None else expires_ms
        args = (
            now_ms,
            micros,
            fingerprint("credit", user_id, micros, meta, expiry, priority, kind),
            entry_id,
            user_id,
            meta,
            key,
            expiry,
            priority,
            kind,
        )
        info = {"kind": "grant", "entry": entry_id, "user": user_id, "amount": micros}
        # (a past expiry is never spooled: only Redis knows whether it replays)
        past = expires_ms is not None and expires_ms <= now_ms
        spool = None if past else info.copy
        reply = await self._store.run("credit", (ikey,), args, spool_info=spool)
        if reply is not None and reply[0] == Reply.PAST_EXPIRY:
            raise _past_expiry(expires_at)
        return _credit_record(reply, entry_id, user_id, micros, now_ms, key)

    async def get_balance(self, user_id: Any) -> Balance:
        """A user's prepaid balance and live grants, with or without
        ``enforce_balance``. Grants whose expiry has passed are expired first
        (with their ``expire`` entries), as any call of the user's would.

        :return: the total, what admission counts less what leases hold, the
            held amount, and the grants in draw order (the first
            :data:`GRANTS_LISTED`)
        """
        user_id = user_id_of(user_id, self._max_id)
        reply = await self._store.run(
            "balance",
            (self.keys.of(user_id).balance(user_id),),
            (self._now_ms(), user_id, GRANTS_LISTED),
        )
        raw, counted, held = reply[0], int(reply[1]), int(reply[2])
        total = 0 if raw is None else int(text(raw).split("|", 1)[0])
        grants = [
            _grant(text(member), int(remaining))
            for member, remaining in zip(reply[3::2], reply[4::2], strict=True)
        ]
        return Balance(
            total=from_micros(total),
            available=from_micros(counted - held),
            held=from_micros(held),
            grants=grants,
        )

    async def sweep_expired_credits(
        self, dry_run: bool = False, batch: int = 500
    ) -> SweepReport:
        """Expire what is left of every grant whose expiry has passed: one
        ``expire`` ledger entry per remainder, written once whoever gets
        there first (another sweep, the user's own next call).

        Not needed for correctness (a grant stops counting at its expiry on
        its own); it writes the entries of users who make no call, and frees
        their memory.

        :param dry_run: count what would expire, change nothing
        :param batch: the most grants one script expires (each call of it is
            one round trip; the sweep calls it until nothing is due)
        """
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise InvalidArgumentError("batch must be a positive integer")
        now_ms = self._now_ms()
        count = amount = 0
        # (sharded: each bucket keeps its own users' next expiries)
        for keys in self.keys.buckets():
            users = grants = 0
            while True:
                reply = await self._store.run(
                    "grants_sweep",
                    (keys.grants_due,),
                    (now_ms, "1" if dry_run else "0", users, grants, batch),
                )
                count += int(reply[0])
                amount += int(reply[1])
                if int(reply[2]):
                    break
                users, grants = int(reply[3]), int(reply[4])
        return SweepReport(count, from_micros(amount), dry_run)


def _credit_record(
    reply: Any, entry_id: str, user_id: str, micros: int, now_ms: int, key: str
) -> SpendRecord:
    """The record of the credit script's reply (``None``: spooled, the new
    balance is not known yet)."""
    record = SpendRecord(
        entry_id=entry_id,
        kind="grant",
        user_id=user_id,
        project_id=None,
        amount_micros=micros,
        model=None,
        occurred_ms=now_ms,
        spooled=reply is None,
    )
    if reply is None:
        return record
    if reply[0] == _CONFLICT:
        raise IdempotencyConflictError(key)
    entry_id, occurred_ms, balance = text(reply[1]).split("|")
    record.entry_id, record.occurred_ms = entry_id, int(occurred_ms)
    record.replayed = reply[0] == _REPLAYED
    record.balance = from_micros(int(balance))
    return record


def _grant(member: str, remaining: int) -> Grant:
    """A grant from its member, ``<expiry>:<id>:<priority>:<kind>``."""
    expires, grant_id, priority, kind = member.split(":", 3)
    expires_ms = int(expires)
    return Grant(
        id=grant_id,
        kind=kind,
        remaining=from_micros(remaining),
        expires_at=None if expires_ms == GRANT_NEVER_MS else from_ms(expires_ms),
        priority=int(priority),
        created_at=from_ms(int(grant_id[:12], 16)),
    )


def _expires_ms(expires_at: object, now_ms: int, past_ok: bool) -> int | None:
    """The expiry in ms (``None``: never); ``past_ok``: one not after now
    is returned rather than refused (a keyed call, maybe a retry).

    :raise InvalidArgumentError: not an aware datetime, past (unless
        ``past_ok``) or too far away
    """
    if expires_at is None:
        return None
    if not isinstance(expires_at, datetime) or expires_at.tzinfo is None:
        raise InvalidArgumentError("expires_at must be an aware datetime or None")
    expires_ms = to_ms(expires_at)
    if expires_ms <= now_ms and not past_ok:
        raise _past_expiry(expires_at)
    if expires_ms >= GRANT_NEVER_MS:
        raise InvalidArgumentError("expires_at is too far away (use None: never)")
    return expires_ms


def _past_expiry(expires_at: Any) -> InvalidArgumentError:
    when = expires_at.isoformat() if isinstance(expires_at, datetime) else "given"
    return InvalidArgumentError(f"expires_at {when} has passed")


def _priority(priority: object) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidArgumentError(f"priority must be an int, not {shown(priority)}")
    low, high = PRIORITY_RANGE
    if not low <= priority <= high:
        raise InvalidArgumentError(f"priority must be within {low}..{high}")
    return priority


def _grant_kind(kind: object) -> str:
    if not isinstance(kind, str) or not _GRANT_KIND.fullmatch(kind):
        raise InvalidArgumentError(
            f"kind must be 1-32 letters, digits and _ . -, not {shown(kind)}"
        )
    return kind


def _grant_metadata(
    metadata: Mapping[str, Any] | None,
    kind: str,
    priority: int,
    expires_ms: int | None,
    max_bytes: int,
) -> str:
    """The grant entry's metadata: the caller's, and the grant's terms under
    ``"grant"`` (the ledger row has no column for them)."""
    if metadata is not None and not isinstance(metadata, Mapping):
        raise InvalidArgumentError("metadata must be a mapping")
    if metadata is not None and _RESERVED_METADATA in metadata:
        raise InvalidArgumentError("metadata key 'grant' is written by add_credits")
    terms = {
        "kind": kind,
        "priority": priority,
        "expires_at": None if expires_ms is None else from_ms(expires_ms).isoformat(),
    }
    return encode_metadata({**(metadata or {}), "grant": terms}, max_bytes)
