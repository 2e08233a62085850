"""Refunds: give back all or part of a charge, a fact (``lua/refund.lua``).

A charge (``record_spend``, ``settle``, ``deduct``) keeps a small record for
``refund_window_seconds`` (its amount, user, project, day, and what it drew
from the balance and from which grants); a refund reads it, lowers the
counters of the charge's day and month, gives the money back where it came
from and appends a ``refund`` entry linked to the charge, in one script.
"""

from __future__ import annotations

from typing import Any

from spendgate.core.ids import check_id, encode_metadata
from spendgate.core.money import credit_micros, from_micros
from spendgate.core.protocol import Reply
from spendgate.errors import (
    ConfigurationError,
    IdempotencyConflictError,
    InvalidAmountError,
    InvalidArgumentError,
    RefundExceedsChargeError,
    UnknownEntryError,
)
from spendgate.models import RefundResult
from spendgate.ops.base import fingerprint, new_id, text
from spendgate.ops.facts import Facts

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
        charge_id = check_id("entry_id", entry_id, self._max_id)
        micros = _refund_micros(amount)
        meta = _reason_metadata(reason, self._max_meta)
        now_ms = self._now_ms()
        entry = new_id(now_ms)
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
        reply = await self._store.run("refund", (ikey,), args, spool_info=info.copy)
        return _result(reply, entry, charge_id, micros, key)


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
    reply: Any, entry: str, charge_id: str, micros: int | None, key: str
) -> RefundResult:
    """The result of the refund script's reply (``None``: spooled)."""
    requested = None if micros is None else from_micros(micros)
    if reply is None:  # spooled: applied (or refused) when Redis answers
        return RefundResult(entry, charge_id, requested, None, None, spooled=True)
    code = reply[0]
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
    )
