"""``deduct``: bursar's one-call charge, in one script.

The usage is priced on the client (the active price book, else the model
prices of :mod:`spendgate.pricing`), then ``lua/deduct.lua`` checks the caps
and the balance above its floor and charges, or refuses and changes nothing.
The script also checks that the book priced with is still the active one;
when it is not, the usage is priced again with the new one and the call
retried, so a charge is priced by exactly one version, the one in force.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from spendgate.core.ids import (
    check_id,
    check_optional_id,
    user_id_of,
)
from spendgate.core.money import charge_micros, from_micros, signed_micros
from spendgate.core.protocol import Reply
from spendgate.errors import (
    BudgetUnavailableError,
    IdempotencyConflictError,
    InsufficientCreditsError,
    InvalidArgumentError,
    StorageError,
)
from spendgate.models import DeductResult
from spendgate.ops.base import fingerprint, new_id, text
from spendgate.ops.deduct_metadata import ledger_metadata, metadata_of, pricing_of
from spendgate.ops.facts import Facts
from spendgate.ops.leases import Leases
from spendgate.ops.pricebooks import PriceBooks
from spendgate.pricing.usage import CostBreakdown, UsageMetrics

_ZERO = Decimal(0)
#: times a deduct is priced again when the active book changed under it
_PRICE_ATTEMPTS = 3


class Deductions(PriceBooks, Leases, Facts):
    """``deduct`` and ``deduct_fixed``."""

    async def deduct(
        self,
        user_id: Any,
        usage: UsageMetrics | Any,
        project_id: str | None = None,
        team_id: str | None = None,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        spool_when_unavailable: bool = False,
    ) -> DeductResult:
        """Price ``usage`` and charge it in one step, or refuse.

        :param usage: a :class:`UsageMetrics` (priced by the active price
            book, else by the model prices) or an amount
        :param team_id: DESIGN's team pool; teams are not built yet, so a
            team id is refused (``InvalidArgumentError``), never ignored
        :param spool_when_unavailable: when Redis does not answer, record the
            charge as a fact (spooled, replayed later, never refused) instead
            of failing closed: a charge without admission, for work that has
            already happened
        :raise InsufficientCreditsError: the balance above its floor (the
            book's ``min_balance``, else the configured one) cannot cover it
        :raise BudgetExceededError: a cap would be passed
        :raise BudgetUnavailableError: Redis did not answer (nothing charged)
        :raise IdempotencyConflictError: a key reused with other arguments
        """
        if team_id is not None:
            raise InvalidArgumentError("team_id: teams are not available yet")
        user = user_id_of(user_id, self._max_id)
        project = check_optional_id("project_id", project_id, self._max_id)
        key = ""
        if idempotency_key is not None:
            key = check_id("idempotency_key", idempotency_key, self._max_id)
        extra = metadata_of(metadata)
        for _ in range(_PRICE_ATTEMPTS):
            try:
                priced = await self._price(usage)
                result = await self._deduct_once(
                    user, project, key, extra, usage, *priced
                )
            except BudgetUnavailableError:
                if not spool_when_unavailable:
                    raise
                offline = self._price_offline(usage)
                return await self._spool_deduct(user, project, key, extra, *offline)
            if result is not None:
                return result
            self._forget_active()  # STALE_PRICE: price with the new book
        raise StorageError("the active price book kept changing during a deduct")

    async def deduct_fixed(
        self,
        user_id: Any,
        job: str,
        project_id: str | None = None,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> DeductResult:
        """Charge the active price book's fixed price of ``job`` (its
        ``fixed`` section), as :meth:`deduct` does.

        :raise InvalidArgumentError: no price book is active, or it prices
            no such job
        """
        return await self.deduct(
            user_id,
            _FixedJob(job),
            project_id,
            idempotency_key=idempotency_key,
            metadata=metadata,
        )

    async def _price(
        self, usage: Any
    ) -> tuple[int, CostBreakdown | None, int | None, str | None, int | None]:
        """The micro-units, breakdown, book version, model and the book's
        balance floor (micro-units, ``None`` for the configured one)."""
        if not isinstance(usage, UsageMetrics | _FixedJob):
            # An amount: priced by no book, but the active book's floor holds
            # (as read within the last REFRESH_SECONDS).
            micros = charge_micros(usage)
            active = None
            if micros:
                fresh = self._fresh_active()
                active = await self.active_pricing() if fresh is False else fresh
            floor = None if active is None else active[1].min_balance
            return micros, None, None, None, _floor_micros(floor)
        fresh = self._fresh_active()
        active = await self.active_pricing() if fresh is False else fresh
        if active is None:
            if isinstance(usage, _FixedJob):
                raise InvalidArgumentError("no price book is active: no fixed prices")
            return _priced_by_models(self, usage)
        version, engine = active
        if isinstance(usage, _FixedJob):
            breakdown = engine.calculate_fixed(usage.job)
        else:
            breakdown = engine.calculate(usage)
        model = usage.model if isinstance(usage, UsageMetrics) else None
        return (
            charge_micros(breakdown.total),
            breakdown,
            version,
            model,
            _floor_micros(engine.min_balance),
        )

    def _price_offline(
        self, usage: Any
    ) -> tuple[int, CostBreakdown | None, int | None, str | None, int | None]:
        """The price while Redis does not answer: an amount as it is, usage by
        the book last read (the active one, as of that read).

        :raise BudgetUnavailableError: usage, and no book was ever read
        """
        if not isinstance(usage, UsageMetrics | _FixedJob):
            return charge_micros(usage), None, None, None, None
        version = None if self._active is None else self._active[0]
        engine = None if version is None else self._books.get(version)
        if version is None or engine is None:
            raise BudgetUnavailableError(
                "the store did not answer, and no price book was read before"
            )
        if isinstance(usage, _FixedJob):
            breakdown = engine.calculate_fixed(usage.job)
        else:
            breakdown = engine.calculate(usage)
        model = usage.model if isinstance(usage, UsageMetrics) else None
        return charge_micros(breakdown.total), breakdown, version, model, None

    async def _deduct_once(
        self,
        user: str,
        project: str | None,
        key: str,
        extra: dict[str, Any],
        usage: Any,
        amount: int,
        breakdown: CostBreakdown | None,
        version: int | None,
        model: str | None,
        floor: int | None,
    ) -> DeductResult | None:
        """One try; ``None`` when the book priced with is no longer active."""
        if amount == 0:  # bursar's short-circuit: nothing to charge or check
            return DeductResult(
                "", user, Decimal(0), Decimal(0), None, breakdown, version
            )
        now_ms = self._now_ms()
        entry_id = new_id(now_ms)
        meta = ledger_metadata(extra, usage, breakdown, version, self._max_meta)
        digest = fingerprint("deduct", user, project, repr(usage), meta) if key else ""
        args = self._fact_head(now_ms, amount) + (
            digest,
            entry_id,
            user,
            project or "",
            model or "",
            meta,
            key,
            "" if version is None else version,
            "" if floor is None else floor,
        )
        ikey = self.keys.caller_idempotency(key) if key else ""
        reply = await self._store.run("deduct", (ikey,), args)
        code = reply[0]
        if code == Reply.STALE_PRICE:
            return None
        if code == Reply.CONFLICT:
            raise IdempotencyConflictError(key)
        if code == Reply.REFUSED:
            raise _refused(
                self._refusal(reply, user, project, amount, self._windows_at(now_ms))
            )
        entry, _, balance, charged, first_version = text(reply[1]).split("|")
        # Positional, in field order (entry_id, user_id, amount,
        # allowance_used, balance_after, breakdown, price_version, replayed).
        return DeductResult(
            entry,
            user,
            from_micros(int(charged)),
            _ZERO,
            from_micros(int(balance)),
            breakdown if code == Reply.OK else None,
            int(first_version) if first_version else None,
            code == Reply.REPLAYED,
        )

    async def _spool_deduct(
        self,
        user: str,
        project: str | None,
        key: str,
        extra: dict[str, Any],
        amount: int,
        breakdown: CostBreakdown | None,
        version: int | None,
        model: str | None,
        floor: int | None,
    ) -> DeductResult:
        record = await self.record_spend(
            user,
            from_micros(amount),
            project,
            model,
            key or None,
            {**extra, "pricing": pricing_of(breakdown, version)},
        )
        return DeductResult(
            entry_id=record.entry_id,
            user_id=user,
            amount=record.amount,
            allowance_used=Decimal(0),
            balance_after=None,
            breakdown=breakdown,
            price_version=version,
            replayed=record.replayed,
            spooled=record.spooled,
        )


class _FixedJob:
    """A fixed-price job to charge (``deduct_fixed``)."""

    __slots__ = ("job",)

    def __init__(self, job: str) -> None:
        self.job = check_id("job", job, 256)

    def __repr__(self) -> str:
        return f"fixed:{self.job}"


def _priced_by_models(
    budget: Any, usage: UsageMetrics
) -> tuple[int, CostBreakdown | None, int | None, str | None, int | None]:
    """No book active: the model prices (overrides, LiteLLM's map, default)."""
    if not usage.model:
        raise InvalidArgumentError("usage names no model, and no price book is active")
    cost = budget.pricing.calculate(
        usage.model,
        usage.input_tokens,
        usage.output_tokens,
        cached_input_tokens=usage.cache_read_tokens,
        cache_creation_input_tokens=usage.cache_write_tokens,
    )
    breakdown = CostBreakdown.from_parts(model=cost)
    return charge_micros(cost), breakdown, None, usage.model, None


def _refused(error: Any) -> Any:
    """A balance refusal is an :class:`InsufficientCreditsError`."""
    if error.window != "balance":
        return error
    return InsufficientCreditsError(
        scope=error.scope,
        scope_id=error.scope_id,
        window=error.window,
        limit=error.limit,
        spent=error.spent,
        requested=error.requested,
        resets_at=error.resets_at,
        held=error.held,
    )


@functools.lru_cache(maxsize=64)
def _floor_micros(value: Decimal | None) -> int | None:
    """A book's ``min_balance`` in micro-units (a negative floor is a credit
    line); ``None`` for the configured floor."""
    return None if value is None else signed_micros(value)
