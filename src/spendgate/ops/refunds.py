"""Refunds: give back all or part of a charge, a fact (``lua/refund.lua``).

A charge (``record_spend``, ``settle``, ``deduct``) keeps a small record for
``refund_window_seconds`` (its amount, user, project, day, and what it drew
from the balance and from which grants); a refund reads it, lowers the
counters of the charge's day and month, gives the money back where it came
from and appends a ``refund`` entry linked to the charge, in one script.

A charge on a team's pool has the entry id ``"<id>.<team id>"``: its refund
is ``lua/team_refund.lua``, which gives the money back to the team's pool
and lowers the member's spending on the team too, the keys of the team and
of the charge's day (its id's time) declared by the call: one round trip.
"""

from __future__ import annotations

from typing import Any

from spendgate.core.fact_keys import moved_key, team_refund_keys
from spendgate.core.ids import check_id, encode_metadata
from spendgate.core.money import credit_micros, from_micros
from spendgate.core.protocol import Reply
from spendgate.core.windows import windows_at
from spendgate.errors import (
    ConfigurationError,
    IdempotencyConflictError,
    InvalidAmountError,
    InvalidArgumentError,
    RefundExceedsChargeError,
    StorageError,
    UnknownEntryError,
)
from spendgate.models import RefundResult
from spendgate.ops.base import fingerprint, new_id, text
from spendgate.ops.facts import Facts
from spendgate.teams import LEASE_ID_LENGTH, team_of_charge

#: the longest reason a refund may carry, in characters
MAX_REASON_LENGTH = 1000


class Refunds(Facts):
    """``refund``."""

    async def refund(
        self,
        entry_id: str,
        amount: Any = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
    ) -> RefundResult:
        """Give back all or part of a charge: a fact (spooled when Redis does
        not answer, replayed once).

        The spent counters of the charge's day and month go down by the
        amount in every scope it counted in, and the money goes back where
        it came from: to the grants the charge drew on (in the reverse of
        the order it drew on them; a grant that has expired since gets
        nothing back: that part expires at once) and to the balance outside
        grants. One ``refund`` ledger entry names the charge (``link_id``).
        A team charge's refund goes back to the team's pool (never more than
        the charge took), lowers the member's spending on the team of the
        charge's day and month too, and its entry names the team
        (``team_id``, also on the result; ``balance_after`` is the pool's).

        :param entry_id: the charge's entry id (``record_spend``, ``settle``
            or ``deduct``), within ``refund_window_seconds`` of it
        :param amount: how much (rounded down to the micro-unit, above 0);
            ``None``: all that is left to refund
        :param reason: kept on the ledger entry (its metadata)
        :raise RefundExceedsChargeError: more than is left to refund of it
        :raise UnknownEntryError: no refund record of that charge is kept
        :raise ConfigurationError: refunds are off (``refund_window_seconds=0``)
        :raise IdempotencyConflictError: a key reused with other arguments
        """
        if self.config.refund_window_seconds == 0:
            raise ConfigurationError(
                "refunds are off (refund_window_seconds=0): charges keep no record"
                " to refund"
            )
        # (a team charge's id is longer: "<id>.<team id>")
        charge_id = check_id("entry_id", entry_id, self._max_id + LEASE_ID_LENGTH + 1)
        micros = _refund_micros(amount)
        meta = _reason_metadata(reason, self._max_meta)
        now_ms = self._now_ms()
        entry = self.keys.id_like(new_id(now_ms), charge_id)  # (its bucket)
        key, ikey = self._idempotency(idempotency_key, entry)
        wanted = "" if micros is None else micros
        args = (
            now_ms,
            charge_id,
            wanted,
            fingerprint("refund", charge_id, wanted, meta),
            entry,
            meta,
            key,
        )
        info = {"kind": "refund", "entry": entry, "charge": charge_id}
        team = team_of_charge(charge_id)
        if team is None:
            reply = await self._store.run("refund", (ikey,), args, spool_info=info.copy)
            if reply is not None and reply[0] == Reply.MOVED:
                # a rebucketing moved the charge's record to its user's bucket
                ikey = moved_key(self.keys, reply[1], key, entry)
                reply = await self._store.run(
                    "refund", (ikey,), args, spool_info=info.copy
                )
            return _result(reply, entry, charge_id, micros, key, None)
        team_id, charged_ms = team
        day = windows_at(charged_ms, self._zone).day
        for _ in range(2):
            reply = await self._store.run(
                "team_refund",
                team_refund_keys(self.keys, ikey, team_id, day),
                (*args, team_id, day),
                spool_info=info.copy,
            )
            if reply is None or reply[0] != Reply.CHARGE_DAY:
                return _result(reply, entry, charge_id, micros, key, team_id)
            # counted in another day than its id says (the window time zone
            # changed since the charge): that day's team keys, once more
            day = text(reply[1])
        raise StorageError(f"the day of charge {charge_id} kept changing")


def _refund_micros(amount: Any) -> int | None:
    """The amount asked for, rounded down (``None``: all that is left)."""
    if amount is None:
        return None
    micros = credit_micros(amount)
    if micros == 0:
        raise InvalidAmountError(amount, "a refund must be above 0")
    return micros


def _reason_metadata(reason: object, max_bytes: int) -> str:
    if reason is None:
        return ""
    if not isinstance(reason, str) or len(reason) > MAX_REASON_LENGTH:
        raise InvalidArgumentError(
            f"reason must be a str of at most {MAX_REASON_LENGTH} characters"
        )
    return encode_metadata({"reason": reason}, max_bytes)


def _result(
    reply: Any,
    entry: str,
    charge_id: str,
    micros: int | None,
    key: str,
    team_id: str | None,
) -> RefundResult:
    """The result of the refund script's reply (``None``: spooled)."""
    requested = None if micros is None else from_micros(micros)
    if reply is None:  # spooled: applied (or refused) when Redis answers
        return RefundResult(
            entry, charge_id, requested, None, None, spooled=True, team_id=team_id
        )
    code = reply[0]
    if code == Reply.MOVED:  # (once already: a record moves once per rebucketing)
        raise StorageError(f"the refund record of {charge_id} moved again")
    if code == Reply.CONFLICT:
        raise IdempotencyConflictError(key)
    if code == Reply.UNKNOWN_ENTRY:
        raise UnknownEntryError(charge_id)
    if code == Reply.REFUND_EXCEEDS:
        raise RefundExceedsChargeError(charge_id, requested, from_micros(int(reply[1])))
    entry, _, refunded, left, balance = text(reply[1]).split("|")
    return RefundResult(
        entry_id=entry,
        charge_id=charge_id,
        refunded=from_micros(int(refunded)),
        refundable_left=from_micros(int(left)),
        balance_after=from_micros(int(balance)) if balance else None,
        replayed=code == Reply.REPLAYED,
        team_id=team_id,
    )
