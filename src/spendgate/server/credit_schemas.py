"""What the HTTP service reads and answers about prepaid credits: grant
terms on ``POST /v1/credits``, ``GET /v1/balance/{user_id}``,
``POST /v1/refunds`` and ``POST /v1/credits/sweep``.

As in :mod:`spendgate.server.schemas`: strict request models, response
models built by their ``of`` constructors, amounts as exact decimal strings,
instants as ISO 8601 strings.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from spendgate.models import Balance, Grant, RefundResult, SweepReport
from spendgate.server.fields import Amount, Id, _integral

_STRICT = ConfigDict(extra="forbid", strict=True)


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _aware_instant(value: str) -> str:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("not an ISO 8601 date and time") from None
    if moment.tzinfo is None:
        raise ValueError("an instant needs its UTC offset (e.g. Z or +00:00)")
    return value


#: an instant: ISO 8601 with its offset ("2026-04-01T00:00:00Z")
Instant = Annotated[
    str,
    Field(description="ISO 8601, with its UTC offset", min_length=1, max_length=64),
    AfterValidator(_aware_instant),
]
#: a grant's priority: lower is drawn on first
Priority = Annotated[
    int, Field(ge=-1_000_000_000, le=1_000_000_000), BeforeValidator(_integral)
]
#: what a grant is ("purchase", "promo", ...)
GrantKind = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")]


class RefundRequest(BaseModel):
    """``POST /v1/refunds``: give back all (no ``amount``) or part of a charge."""

    model_config = _STRICT
    entry_id: Id
    amount: Amount | None = None
    reason: Annotated[str, Field(max_length=1000)] | None = None
    idempotency_key: Id | None = None


class GrantBody(BaseModel):
    id: str
    kind: str
    remaining: str
    expires_at: str | None
    priority: int
    created_at: str

    @classmethod
    def of(cls, grant: Grant) -> GrantBody:
        return cls(
            id=grant.id,
            kind=grant.kind,
            remaining=str(grant.remaining),
            expires_at=grant.expires_at.isoformat() if grant.expires_at else None,
            priority=grant.priority,
            created_at=grant.created_at.isoformat(),
        )


class BalanceResponse(BaseModel):
    user_id: str
    unit: str
    #: the live grants' remainders plus the part outside grants (negative: a debt)
    total: str
    #: what admission lets the user spend now, before ``min_balance``
    available: str
    held: str
    grants: list[GrantBody]

    @classmethod
    def of(cls, user_id: str, unit: str, balance: Balance) -> BalanceResponse:
        return cls(
            user_id=user_id,
            unit=unit,
            total=str(balance.total),
            available=str(balance.available),
            held=str(balance.held),
            grants=[GrantBody.of(g) for g in balance.grants],
        )


class RefundResponse(BaseModel):
    status: Literal["refunded"]
    entry_id: str
    charge_id: str
    replayed: bool
    spooled: bool
    refunded: str | None
    refundable_left: str | None
    #: the user's balance after, or a team charge's pool's
    balance_after: str | None
    #: the team whose pool the charge was on (``None``: the user's own)
    team_id: str | None

    @classmethod
    def of(cls, result: RefundResult) -> RefundResponse:
        return cls(
            status="refunded",
            entry_id=result.entry_id,
            charge_id=result.charge_id,
            replayed=result.replayed,
            spooled=result.spooled,
            refunded=_money(result.refunded),
            refundable_left=_money(result.refundable_left),
            balance_after=_money(result.balance_after),
            team_id=result.team_id,
        )


class SweepResponse(BaseModel):
    dry_run: bool
    count: int
    amount: str

    @classmethod
    def of(cls, report: SweepReport) -> SweepResponse:
        return cls(
            dry_run=report.dry_run, count=report.count, amount=str(report.amount)
        )
