"""What the analytics answer: one record per group, day, or window.

Amounts are exact ``Decimal``; "net" is the charges less their refunds plus
the adjustments that apply (see :mod:`spendgate.ledger.netspend`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from spendgate.core.money import from_micros


@dataclass(frozen=True)
class SpendGroup:
    """Net spend of one user, project or model over the window."""

    #: the user id, project id or model; ``None`` for "no project" / "no model"
    key: str | None
    #: charges counted (refunds and adjustments are not calls)
    calls: int
    #: net spend: the charges, less their refunds, plus the adjustments
    total: Decimal
    #: token counts summed where the metadata carried them (0 otherwise)
    input_tokens: int
    output_tokens: int
    #: given back by refunds of these charges (already taken off ``total``)
    refunded: Decimal = Decimal(0)
    #: operators' adjustments of this scope's daily counters (in ``total``)
    adjusted: Decimal = Decimal(0)
    #: of ``total``, what plans' free allowances paid (net of refunds, which
    #: give the allowance's part back last); the rest came off grants and
    #: balances
    allowance: Decimal = Decimal(0)

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> SpendGroup:
        """One row of the analytics' sums (``key``, ``calls``, the micro-unit
        totals; ``adjusted_micros`` and ``allowance_micros`` only where they
        apply: a team's spend has no adjustments, and a team's pool pays its
        charges, never a plan's allowance)."""
        adjusted = row.get("adjusted_micros")
        allowance = row.get("allowance_micros")
        return cls(
            key=row["key"],
            calls=row["calls"],
            total=from_micros(row["total_micros"]),
            input_tokens=row["input_tokens"],
            output_tokens=row["output_tokens"],
            refunded=from_micros(row["refunded_micros"]),
            adjusted=Decimal(0) if adjusted is None else from_micros(adjusted),
            allowance=Decimal(0) if allowance is None else from_micros(allowance),
        )


@dataclass(frozen=True)
class DailySpend:
    """Net spend of one UTC day (refunds on their charge's day)."""

    day: date
    calls: int
    total: Decimal
    #: users that were charged that day
    users: int
    #: given back by refunds of that day's charges (already taken off ``total``)
    refunded: Decimal = Decimal(0)
    #: adjustments of that day's global counter (in ``total``)
    adjusted: Decimal = Decimal(0)
    #: of ``total``, what plans' free allowances paid (net of refunds, which
    #: give the allowance's part back last); the rest came off grants and
    #: balances
    allowance: Decimal = Decimal(0)


@dataclass(frozen=True)
class SpendStats:
    """Aggregates over the window; amounts ``None`` when there were no calls."""

    #: charges counted (cost per call = the net amount of one charge)
    calls: int
    #: net spend, global adjustments included
    total: Decimal
    distinct_users: int
    distinct_projects: int
    #: mean net cost per call, rounded to the micro-unit
    mean: Decimal | None
    minimum: Decimal | None
    maximum: Decimal | None
    #: discrete percentiles of net cost per call, keyed by fraction (0.5, ...)
    percentiles: dict[float, Decimal | None]
    input_tokens: int
    output_tokens: int
    #: given back by refunds (already taken off ``total``)
    refunded: Decimal = Decimal(0)
    #: adjustments of the global daily counters (in ``total``)
    adjusted: Decimal = Decimal(0)
    #: of ``total``, what plans' free allowances paid (net of refunds, which
    #: give the allowance's part back last); the rest came off grants and
    #: balances
    allowance: Decimal = Decimal(0)


@dataclass(frozen=True)
class CreditFlow:
    """Prepaid credits of one user over the window."""

    user_id: str
    #: credits added (kinds ``grant`` and the legacy ``credit``)
    granted: Decimal
    #: unused remainders that expired (kind ``expire``)
    expired: Decimal
    #: charges less their refunds (by the charges' time)
    spent: Decimal
    #: ``granted - expired - spent``: what the user's balance moved by when
    #: every charge draws on it (not so for charges a plan's allowance
    #: covers: ``net + allowance`` is then)
    net: Decimal
    #: grant rows (credits added)
    grants: int
    #: expire rows
    expiries: int
    #: of ``spent``, what the user's plan allowance paid (net of refunds)
    allowance: Decimal = Decimal(0)
