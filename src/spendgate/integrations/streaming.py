"""Streaming holds: meter what a stream uses against its lease, and extend
the hold a step at a time as it grows.

A streamed response's cost is known only as it is produced. A
:class:`LeaseMeter` is told what the stream has used so far; while that
fits the lease's hold nothing happens, and when it would not, the hold is
extended (:meth:`BudgetManager.extend <spendgate.BudgetManager.extend>`) by
one ``step`` (or by what is missing, when that is more). When the budget
cannot give a full step, the meter asks for exactly what is missing, so a
stream runs to the cap itself; when not even that fits, the extension's
:class:`~spendgate.BudgetExceededError` reaches the caller, which cuts the
stream, and the use that did not fit is not counted. What was used is kept
on the lease as ``actual_cost``, so whoever settles the lease (the caller,
``budget.lease(...)``, the ASGI middleware) charges exactly that, also when
the stream ends early.

Used by the LiteLLM callback (:mod:`spendgate.integrations.litellm_stream`)
and offered to endpoints behind the ASGI middleware
(``request.state.spendgate_meter``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from loguru import logger

from spendgate.core.money import charge_micros, from_micros
from spendgate.errors import BudgetExceededError, BudgetUnavailableError

if TYPE_CHECKING:
    from spendgate.manager import BudgetManager
    from spendgate.models import Lease


class LeaseMeter:
    """What a stream has used of its lease; extends the hold when needed.

    :param budget: the budget the lease is held on
    :param lease: the lease; its ``amount`` grows with each extension and
        its ``actual_cost`` is what was used so far
    :param step: what one extension adds at least (an amount); 0 extends by
        exactly what is missing each time
    :param ttl_seconds: each extension also moves the hold's expiry to this
        far from now (a stream that keeps producing keeps its hold alive);
        defaults to the config's ``lease_ttl_seconds``
    """

    def __init__(
        self,
        budget: BudgetManager,
        lease: Lease,
        step: Any = 0,
        *,
        ttl_seconds: int | None = None,
    ) -> None:
        self.budget = budget
        self.lease = lease
        self.step_micros = charge_micros(step)
        self.ttl_seconds = ttl_seconds or budget.config.lease_ttl_seconds
        #: what was used so far, micro-units (rounded up, as a charge is)
        self.used_micros = 0
        #: extensions granted so far
        self.extensions = 0

    @property
    def used(self) -> Decimal:
        """What the stream has used so far."""
        return from_micros(self.used_micros)

    async def add(self, amount: Any) -> None:
        """Count ``amount`` more as used (see :meth:`reach`)."""
        await self.reach_micros(self.used_micros + charge_micros(amount))

    async def reach(self, total: Any) -> None:
        """The stream has now used ``total`` in all (never less than before).

        :raise BudgetExceededError: ``total`` does not fit the hold and the
            hold cannot grow to it; nothing of it is counted
        :raise BudgetUnavailableError: the store did not answer the
            extension (unless ``fail_open``: then the use is counted, unheld)
        """
        await self.reach_micros(charge_micros(total))

    async def reach_micros(self, total: int) -> None:
        """:meth:`reach`, in micro-units."""
        missing = total - self.lease.amount_micros
        if missing > 0:
            try:
                await self._extend(missing)
            except BudgetUnavailableError:
                if not self.budget.config.fail_open:
                    raise
                logger.warning(
                    "spendgate: store unavailable, streaming lease {} on "
                    "unheld (fail_open=True)",
                    self.lease.id,
                )
        if total > self.used_micros:
            self.used_micros = total
            self.lease.actual_cost = from_micros(total)

    async def _extend(self, missing: int) -> None:
        budget, lease, ttl = self.budget, self.lease, self.ttl_seconds
        if self.step_micros > missing:
            try:
                await budget.extend(lease, from_micros(self.step_micros), ttl)
                self.extensions += 1
                return
            except BudgetUnavailableError:
                raise
            except BudgetExceededError:
                pass  # a whole step does not fit: what is missing may
        await budget.extend(lease, from_micros(missing), ttl)
        self.extensions += 1
