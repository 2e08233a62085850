"""How ``deduct`` prices a charge before its one script: the active price
book (else the model prices) for the user's plan as the manager last knew
it, a fixed job's price, and, while Redis does not answer, the book last
read."""

from __future__ import annotations

import functools
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from spendgate.core.ids import check_id
from spendgate.core.money import charge_micros, signed_micros
from spendgate.errors import BudgetUnavailableError, InvalidArgumentError
from spendgate.ops.plans import Plans
from spendgate.plans.cache import split_assignment
from spendgate.pricing.usage import CostBreakdown, UsageMetrics

if TYPE_CHECKING:
    from spendgate.plans.models import Plan
    from spendgate.pricing.engine import PricingEngine

#: a priced charge: micro-units, breakdown, book version, model, the book's
#: balance floor (micro-units, ``None``: the configured one), the plan that
#: priced it, and what the script checks the user's plan against ("" for
#: nothing)
Priced = tuple[
    int, CostBreakdown | None, int | None, str | None, int | None, str | None, str
]

#: times a deduct is priced again when the active book changed under it
PRICE_ATTEMPTS = 3


def with_model(priced: Priced, model: str | None) -> Priced:
    """``priced`` with ``model`` as its model: a charge given as an amount
    names it (``None``: as priced)."""
    if model is None:
        return priced
    amount, breakdown, version, _, floor, plan, check = priced
    return amount, breakdown, version, model, floor, plan, check


class DeductPricing(Plans):
    """How ``deduct`` prices: the active book (or the model prices) for the
    user's plan as last read, and offline, the book last read."""

    async def _price(self, usage: Any, user: str) -> Priced:
        """The charge, priced (see :data:`Priced`)."""
        if not isinstance(usage, UsageMetrics | FixedJob):
            # An amount: priced by no book, but the active book's floor holds
            # (as read within the last REFRESH_SECONDS).
            micros = charge_micros(usage)
            active, check = None, ""
            if micros:
                fresh = self._fresh_active()
                active = await self.active_pricing() if fresh is False else fresh
                if self._plans_exist(None if active is None else active[1]):
                    # (no plan prices an amount, but its allowance pays it)
                    cache = self._plans()
                    if cache.stale(self._plans_rev_seen):
                        await self._load_plans()
                    check = "=" + cache.guess(user)
            floor = None if active is None else active[1].min_balance
            return micros, None, None, None, floor_micros(floor), None, check
        fresh = self._fresh_active()
        active = await self.active_pricing() if fresh is False else fresh
        plan, check = None, ""
        if self._plans_exist(None if active is None else active[1]):
            cache = self._plans()
            if cache.stale(self._plans_rev_seen):
                await self._load_plans()
            plan, check = self._plan_to_price(user, active)
            if not isinstance(usage, UsageMetrics):  # (a fixed price: no overrides)
                plan = None
        pid = None if plan is None else plan.plan_id
        if active is None:
            if isinstance(usage, FixedJob):
                raise InvalidArgumentError("no price book is active: no fixed prices")
            return (*priced_by_models(self, usage, plan), pid, check)
        version, engine = active
        if isinstance(usage, FixedJob):
            breakdown = engine.calculate_fixed(usage.job)
        else:
            rates = None if plan is None else plan.rates
            breakdown = engine.calculate(usage, rate_overrides=rates)
        model = usage.model if isinstance(usage, UsageMetrics) else None
        return (
            charge_micros(breakdown.total),
            breakdown,
            version,
            model,
            floor_micros(engine.min_balance),
            pid,
            check,
        )

    def _plan_to_price(
        self, user: str, active: tuple[int, PricingEngine] | None
    ) -> tuple[Plan | None, str]:
        """The user's plan as last read (``None``: none, or not in force) and
        the check the script makes of it."""
        cache = self._plans()
        guess = cache.guess(user)
        parts = split_assignment(guess)
        engine = None if active is None else active[1]
        plan = None if parts is None else cache.view(engine).get(parts[1])
        return plan, "=" + guess

    def _price_offline(self, usage: Any, user: str) -> Priced:
        """The price while Redis does not answer: an amount as it is, usage by
        the book last read (the active one, as of that read) for the user's
        plan as last read.

        :raise BudgetUnavailableError: usage, and no book was ever read
        """
        if not isinstance(usage, UsageMetrics | FixedJob):
            return charge_micros(usage), None, None, None, None, None, ""
        version = None if self._active is None else self._active[0]
        engine = None if version is None else self._books.get(version)
        if version is None or engine is None:
            raise BudgetUnavailableError(
                "the store did not answer, and no price book was read before"
            )
        plan = None
        if isinstance(usage, FixedJob):
            breakdown = engine.calculate_fixed(usage.job)
        else:
            if self._plan_cache is not None and self._plans_exist(engine):
                plan = self._plan_to_price(user, (version, engine))[0]
            rates = None if plan is None else plan.rates
            breakdown = engine.calculate(usage, rate_overrides=rates)
        model = usage.model if isinstance(usage, UsageMetrics) else None
        pid = None if plan is None else plan.plan_id
        return charge_micros(breakdown.total), breakdown, version, model, None, pid, ""


class FixedJob:
    """A fixed-price job to charge (``deduct_fixed``)."""

    __slots__ = ("job",)

    def __init__(self, job: str) -> None:
        self.job = check_id("job", job, 256)

    def __repr__(self) -> str:
        return f"fixed:{self.job}"


def priced_by_models(
    budget: Any, usage: UsageMetrics, plan: Plan | None
) -> tuple[int, CostBreakdown | None, int | None, str | None, int | None]:
    """No book active: the plan's rate overrides when they price the model,
    else the model prices (overrides, LiteLLM's map, default)."""
    rates = None if plan is None else plan.engine
    if rates is not None and (
        rates.has_default_model or (usage.model and rates.has_model(usage.model))
    ):
        breakdown = rates.calculate(usage)
        return charge_micros(breakdown.total), breakdown, None, usage.model, None
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


@functools.lru_cache(maxsize=64)
def floor_micros(value: Decimal | None) -> int | None:
    """A book's ``min_balance`` in micro-units (a negative floor is a credit
    line); ``None`` for the configured floor."""
    return None if value is None else signed_micros(value)
