"""What the corrections calls return: an operator's :class:`Adjustment` of
a counter (:meth:`BudgetManager.adjust_usage`) and a user's ledger entries
as :class:`Transaction` records (:meth:`BudgetManager.list_transactions`);
plain records with exact ``Decimal`` amounts, as :mod:`spendgate.models`'."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any


@dataclass(frozen=True, slots=True)
class Adjustment:
    """An operator's correction of one counter
    (:meth:`BudgetManager.adjust_usage`)."""

    #: the ``adjust`` ledger entry; a replay returns the first call's
    entry_id: str
    #: ``"user"``, ``"project"`` or ``"global"``
    scope: str
    #: the user or project id; ``None`` for global
    scope_id: str | None
    #: ``"daily"`` or ``"monthly"``
    window: str
    #: the window corrected: its day ``YYYY-MM-DD`` or month
    #: ``YYYY-MM`` (of ``window_timezone``, UTC by default)
    period: str
    #: the signed amount asked for (+ raises the counter, - lowers it)
    requested: Decimal
    #: the signed amount applied: the request, or less of a lowering that
    #: would have taken the counter below zero; ``None`` when spooled
    applied: Decimal | None
    #: the counter after the correction; ``None`` when spooled
    spent_after: Decimal | None
    #: when the correction was made (the first time, for a replay)
    occurred_at: datetime
    #: True when an idempotency key replayed it
    replayed: bool = False
    #: True when Redis was unreachable and it went to the local spool
    spooled: bool = False


@dataclass(frozen=True, slots=True)
class Transaction:
    """One ledger entry of a user (:meth:`BudgetManager.list_transactions`)."""

    entry_id: str
    #: the ledger kind: ``spend``, ``settle``, ``grant``, ``credit``,
    #: ``expire``, ``refund`` or ``adjust``
    kind: str
    occurred_at: datetime
    #: the amount as the ledger holds it: non-negative, its sign is the
    #: kind's; an ``adjust``'s is signed
    amount: Decimal
    user_id: str | None
    project_id: str | None
    model: str | None
    #: a refund: the entry id of the charge
    link_id: str | None = None
    #: a grant or its expiry: the grant
    grant_id: str | None = None
    #: a charge on a team's pool, or a refund of one: the team
    team_id: str | None = None
    #: an adjust: the scope and the window (``YYYY-MM-DD`` or ``YYYY-MM``)
    scope: str | None = None
    window: str | None = None
    idempotency_key: str | None = None
    #: a settle: the lease
    lease_id: str | None = None
    #: the price book version that priced it
    price_version: int | None = None
    #: a charge: the part of ``amount`` a plan's free allowance paid
    #: (``None``: none)
    allowance_used: Decimal | None = None
    metadata: dict[str, Any] | None = None
