"""``async with budget.lease(...)``: reserve on entry, settle at the block's
actual cost on a normal exit, release on an error (the block's, or a cost or
model it set that cannot be settled: that error is raised)."""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING, Any

from loguru import logger

from spendgate.errors import InvalidArgumentError, InvalidIdTypeError
from spendgate.models import Lease, SpendRecord

if TYPE_CHECKING:
    from spendgate.manager import BudgetManager
    from spendgate.ops.leases import Leases


class LeaseContext:
    """``async with budget.lease(...) as lease``: settle on exit, release on error."""

    def __init__(
        self,
        budget: Leases | BudgetManager,
        user_id: Any,
        estimate: Any,
        project_id: str | None,
        ttl_seconds: int | None,
        idempotency_key: str | None,
        team_id: str | None = None,
        model: str | None = None,
    ) -> None:
        self._budget = budget
        self._args = (user_id, estimate, project_id, ttl_seconds, idempotency_key)
        self._team_id = team_id
        self._model = model
        self.lease: Lease | None = None
        #: the settle record, once the block has ended normally
        self.record: SpendRecord | None = None

    async def __aenter__(self) -> Lease:
        self.lease = await self._budget.reserve(
            *self._args, team_id=self._team_id, model=self._model
        )
        return self.lease

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        lease = self.lease
        assert lease is not None
        if exc_type is None:
            cost = lease.actual_cost
            if cost is None:
                logger.warning(
                    "spendgate: lease {} ended without actual_cost; "
                    "settling at the estimate",
                    lease.id,
                )
                cost = lease.amount
            try:
                self.record = await self._budget.settle(
                    lease, cost, lease.model, lease.metadata
                )
            except (InvalidArgumentError, InvalidIdTypeError):
                # What the block set cannot be settled (nothing was): an
                # error of the block's, so the hold is given back now rather
                # than left to its expiry, and the error raised.
                await self._release(lease)
                raise
            return
        await self._release(lease)

    async def _release(self, lease: Lease) -> None:
        try:
            await self._budget.release(lease)
        except Exception as release_error:  # the hold expires by itself anyway
            logger.warning(
                "spendgate: could not release lease {} after an error: {}",
                lease.id,
                release_error,
            )
