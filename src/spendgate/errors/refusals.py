"""Refusals: a cap, the balance, a feature's limit or entitlement said no."""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal
from typing import Any, get_args

from spendgate.errors.base import (
    BALANCE_RETRY_AFTER_SECONDS,
    RefusalScope,
    SpendgateError,
    Window,
)

#: the scopes a refusal names (``RefusalScope``)
_SCOPES = frozenset(get_args(RefusalScope))


class BudgetExceededError(SpendgateError):
    """Admission refused: the request would pass a cap or the balance.

    :param scope: ``"user"``, ``"project"`` or ``"global"``; for a charge
        on a team's pool also ``"team"`` (its pool) or ``"team_member"``
        (the member's caps on the team, ``scope_id`` the user)
    :param scope_id: the user or project id; ``None`` for the global scope
    :param window: ``"daily"``, ``"weekly"``, ``"monthly"``, ``"minute"``
        (the per-minute cap, or its kill switch) or ``"balance"``
    :param limit: the cap of that window; for ``"balance"``, the balance above
        ``min_balance`` (what could be spent at all)
    :param spent: spent in the window (for ``"balance"``: 0, the balance
        already reflects spending)
    :param requested: the amount asked for
    :param held: the amount held by open leases in that scope
    :param resets_at: when the window rolls over (UTC); for ``"minute"``,
        when enough of the minute's spend has left it for this request to
        fit (or when the kill switch ends); ``None`` for balances
    :param model: the model whose per-model cap of that scope and window
        refused (``set_limits(..., model=...)``); ``None`` when the scope's
        own cap or balance did

    coreason-budget's form, a message alone
    (``BudgetExceededError("Global daily limit exceeded")``, as its users'
    code and mocks raise it), is that message, with no fields.
    """

    def __init__(
        self,
        scope: RefusalScope | None = None,
        scope_id: str | None = None,
        window: Window | None = None,
        limit: Decimal | None = None,
        spent: Decimal | None = None,
        requested: Decimal | None = None,
        resets_at: datetime | None = None,
        held: Decimal | None = None,
        message: str | None = None,
        model: str | None = None,
    ) -> None:
        if isinstance(scope, str) and scope not in _SCOPES and window is None:
            # (a first argument that names no scope is coreason's message)
            message, scope = message or scope, None
        self.scope = scope
        self.scope_id = scope_id
        self.window = window
        self.limit = limit
        self.spent = spent
        self.requested = requested
        self.resets_at = resets_at
        self.held = held
        self.model = model
        super().__init__(message or self._describe())

    def retry_after_seconds(self, now: datetime) -> int:
        """Whole seconds from ``now`` until the window resets (at least 1);
        ``BALANCE_RETRY_AFTER_SECONDS`` for a balance, which has no window."""
        if self.resets_at is None:
            return BALANCE_RETRY_AFTER_SECONDS
        return max(1, math.ceil((self.resets_at - now).total_seconds()))

    def to_json(self, now: datetime) -> dict[str, Any]:
        """The refusal as JSON values (amounts as exact decimal strings), as
        the HTTP server and the ASGI middleware answer a 429 with it."""
        return {
            "status": "refused",
            "detail": str(self),
            "scope": self.scope,
            "scope_id": self.scope_id,
            "window": self.window,
            "model": self.model,
            "limit": _money(self.limit),
            "spent": _money(self.spent),
            "held": _money(self.held),
            "requested": _money(self.requested),
            "resets_at": self.resets_at.isoformat() if self.resets_at else None,
            "retry_after_seconds": self.retry_after_seconds(now),
        }

    def _describe(self) -> str:
        # coreason-budget's wording first ("User daily limit exceeded for
        # ..."): its callers match on it.
        # ("team_member" reads "Team member")
        scope = (self.scope or "budget").replace("_", " ").capitalize()
        who = "" if self.scope_id is None else f" for {self.scope_id!r}"
        if self.model is not None:
            who += f" on model {self.model!r}"
        text = (
            f"{scope} {self.window} limit exceeded{who}: limit {self.limit}, "
            f"spent {self.spent}, held {self.held}, requested {self.requested}"
        )
        if self.resets_at is not None:
            text += f"; resets at {self.resets_at.isoformat()}"
        return text


def _money(amount: Decimal | None) -> str | None:
    return None if amount is None else str(amount)


class BudgetUnavailableError(BudgetExceededError):
    """Admission refused because the store could not be reached in time.

    Raised instead of admitting when ``fail_open`` is off (the default).
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(message=f"budget store unavailable, refusing: {reason}")


class InsufficientCreditsError(BudgetExceededError):
    """``deduct`` refused: the allowance and the balance cannot cover the
    charge above the ``min_balance`` floor (``window == "balance"``)."""


class FeatureLimitExceededError(SpendgateError):
    """``use_feature`` refused: the feature's calls reached ``max_calls`` in
    this period and its action is ``deny``. Nothing was counted.

    :param user_id: the user
    :param feature: the feature
    :param limit: ``max_calls``
    :param used: the calls counted this period
    :param period: the limit's calendar period (``"monthly"``...)
    :param resets_at: when the count starts again (UTC)
    """

    def __init__(
        self,
        user_id: str,
        feature: str,
        limit: int,
        used: int,
        period: str,
        resets_at: datetime,
    ) -> None:
        self.user_id = user_id
        self.feature = feature
        self.limit = limit
        self.used = used
        self.period = period
        self.resets_at = resets_at
        super().__init__(
            f"feature {feature!r} limit reached for {user_id!r}: {used} of"
            f" {limit} {period} calls used; resets at {resets_at.isoformat()}"
        )


class FeatureNotEntitledError(SpendgateError):
    """``use_feature`` refused: the user's plan neither has the feature
    (bursar's truthy rule) nor limits it, or the user has no plan. Nothing
    was counted."""

    def __init__(self, user_id: str, feature: str, plan_id: str | None) -> None:
        self.user_id = user_id
        self.feature = feature
        self.plan_id = plan_id
        plan = "has no plan" if plan_id is None else f"has plan {plan_id!r}"
        super().__init__(
            f"user {user_id!r} {plan}, which does not include feature {feature!r}"
        )
