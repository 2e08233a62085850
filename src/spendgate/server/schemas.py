"""What the HTTP service reads and answers: the request and response models.

The request models validate bodies (strictly: no coercion, no unknown
fields); the response models are each route's ``response_model`` and are
built from the budget's results by their ``of`` constructors, so an answer
cannot drift from the OpenAPI document. Amounts are answered as exact decimal
strings, instants as ISO 8601 strings.

The classes' docstrings are their descriptions in the OpenAPI document.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from spendgate.models import (
    Lease,
    ModelUsage,
    ScopeUsage,
    SpendRecord,
    WindowUsage,
)
from spendgate.server.credit_schemas import GrantKind, Instant, Priority
from spendgate.server.fields import Amount, Id, Metadata, ModelName, TtlSeconds
from spendgate.server.limit_schemas import CapWarningBody, warnings_of

_STRICT = ConfigDict(extra="forbid", strict=True)


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


# -- requests ------------------------------------------------------------------------


class CheckRequest(BaseModel):
    """``POST /check``: may this user spend ``estimated_cost`` now?"""

    model_config = _STRICT
    user_id: Id
    project_id: Id | None = None
    estimated_cost: Amount = Decimal(0)
    #: the model the call is for: its per-model caps are checked too
    model: ModelName | None = None


class SpendRequest(BaseModel):
    """``POST /spend``: record money already spent (a fact)."""

    model_config = _STRICT
    user_id: Id
    cost: Amount
    project_id: Id | None = None
    model: ModelName | None = None
    idempotency_key: Id | None = None
    metadata: Metadata | None = None
    #: charge this team's shared pool (the user must be a member)
    team_id: Id | None = None


class ReserveRequest(BaseModel):
    """``POST /v1/reserve``: hold ``amount`` until settled, released or expired."""

    model_config = _STRICT
    user_id: Id
    amount: Amount
    project_id: Id | None = None
    ttl_seconds: TtlSeconds | None = None
    idempotency_key: Id | None = None
    #: hold on this team's shared pool (the user must be a member)
    team_id: Id | None = None
    #: the model the call is for: its per-model caps admit the hold, and
    #: the settle counts at it
    model: ModelName | None = None


class ReserveUpToRequest(BaseModel):
    """``POST /v1/reserve_up_to``: hold as much as fits, from ``min_amount``
    up to ``max_amount``."""

    model_config = _STRICT
    user_id: Id
    max_amount: Amount
    min_amount: Amount = Decimal(0)
    project_id: Id | None = None
    ttl_seconds: TtlSeconds | None = None
    idempotency_key: Id | None = None
    #: hold on this team's shared pool (the user must be a member)
    team_id: Id | None = None
    model: ModelName | None = None


class SettleRequest(BaseModel):
    """``POST /v1/settle``: charge a lease's actual cost."""

    model_config = _STRICT
    lease_id: Id
    actual_cost: Amount
    model: ModelName | None = None
    metadata: Metadata | None = None


class ExtendRequest(BaseModel):
    """``POST /v1/extend``: top a live lease up by ``more``, admitted like a
    reserve of ``more``; ``ttl_seconds`` moves its expiry later."""

    model_config = _STRICT
    lease_id: Id
    more: Amount
    ttl_seconds: TtlSeconds | None = None
    idempotency_key: Id | None = None


class ReleaseRequest(BaseModel):
    """``POST /v1/release``: void a lease."""

    model_config = _STRICT
    lease_id: Id


class CreditsRequest(BaseModel):
    """``POST /v1/credits``: grant prepaid credits to a user (expiring at
    ``expires_at``, drawn on by ``priority``, lower first)."""

    model_config = _STRICT
    user_id: Id
    amount: Amount
    idempotency_key: Id | None = None
    metadata: Metadata | None = None
    expires_at: Instant | None = None
    priority: Priority = 0
    kind: GrantKind = "purchase"


# -- responses (no docstrings where the document has no description) ----------------


class Problem(BaseModel):
    """An error: what went wrong, and per field for invalid input."""

    detail: str
    errors: list[dict[str, Any]] | None = None


class Refusal(BaseModel):
    """429: the request would pass a cap or the balance."""

    status: Literal["refused"]
    detail: str
    scope: str | None
    scope_id: str | None
    window: str | None
    #: the model whose per-model cap refused; ``null`` for the scope's own
    model: str | None = None
    limit: str | None
    spent: str | None
    held: str | None
    requested: str | None
    resets_at: str | None
    retry_after_seconds: int


class HealthResponse(BaseModel):
    status: str
    redis: str


class Unhealthy(HealthResponse):
    """503: Redis is not answering; ``detail`` is worded as coreason-budget's
    server words it, for callers that match on it."""

    detail: str


class CheckResponse(BaseModel):
    status: Literal["allowed"]
    user_id: str
    project_id: str | None
    #: the smallest amount left over every capped window and balance
    remaining: str | None

    @classmethod
    def of(
        cls, user_id: str, project_id: str | None, remaining: Decimal | None
    ) -> CheckResponse:
        return cls(
            status="allowed",
            user_id=user_id,
            project_id=project_id,
            remaining=_money(remaining),
        )


class SpendResponse(BaseModel):
    status: Literal["recorded"]
    entry_id: str
    replayed: bool
    spooled: bool
    user_id: str
    project_id: str | None
    model: str | None
    amount: str
    #: the part of ``amount`` the user's plan allowance paid ("0": none)
    allowance_used: str
    occurred_at: str
    #: the thresholds of ``warn`` caps this charge reached
    warnings: list[CapWarningBody]
    team_id: str | None = None

    @classmethod
    def of(cls, record: SpendRecord) -> SpendResponse:
        return cls(
            status="recorded",
            entry_id=record.entry_id,
            replayed=record.replayed,
            spooled=record.spooled,
            user_id=record.user_id,
            project_id=record.project_id,
            model=record.model,
            amount=str(record.amount),
            allowance_used=str(record.allowance_used),
            occurred_at=record.occurred_at.isoformat(),
            warnings=warnings_of(record.warnings),
            team_id=record.team_id,
        )


class LeaseResponse(BaseModel):
    lease_id: str
    expires_at: str
    amount: str
    user_id: str
    project_id: str | None
    replayed: bool
    team_id: str | None = None

    @classmethod
    def of(cls, lease: Lease) -> LeaseResponse:
        return cls(
            lease_id=lease.id,
            expires_at=lease.expires_at.isoformat(),
            amount=str(lease.amount),
            user_id=lease.user_id,
            project_id=lease.project_id,
            replayed=lease.replayed,
            team_id=lease.team_id,
        )


class SettleResponse(BaseModel):
    status: Literal["settled"]
    entry_id: str
    lease_id: str | None
    replayed: bool
    spooled: bool
    late: bool
    amount: str
    #: the part of ``amount`` the user's plan allowance paid ("0": none)
    allowance_used: str
    estimate: str | None
    user_id: str
    project_id: str | None
    model: str | None
    occurred_at: str
    #: the thresholds of ``warn`` caps this settle reached
    warnings: list[CapWarningBody]
    #: the team whose pool paid (a team lease's), else ``null``
    team_id: str | None = None

    @classmethod
    def of(cls, record: SpendRecord) -> SettleResponse:
        return cls(
            status="settled",
            entry_id=record.entry_id,
            lease_id=record.lease_id,
            replayed=record.replayed,
            spooled=record.spooled,
            late=record.late,
            amount=str(record.amount),
            allowance_used=str(record.allowance_used),
            estimate=_money(record.estimate),
            user_id=record.user_id,
            project_id=record.project_id,
            model=record.model,
            occurred_at=record.occurred_at.isoformat(),
            warnings=warnings_of(record.warnings),
            team_id=record.team_id,
        )


class ReleaseResponse(BaseModel):
    status: Literal["released"]
    lease_id: str
    #: false when the hold had already been released or had expired
    released: bool


class CreditsResponse(BaseModel):
    status: Literal["credited"]
    entry_id: str
    replayed: bool
    spooled: bool
    user_id: str
    amount: str
    balance: str | None
    occurred_at: str

    @classmethod
    def of(cls, record: SpendRecord) -> CreditsResponse:
        return cls(
            status="credited",
            entry_id=record.entry_id,
            replayed=record.replayed,
            spooled=record.spooled,
            user_id=record.user_id,
            amount=str(record.amount),
            balance=_money(record.balance),
            occurred_at=record.occurred_at.isoformat(),
        )


class WindowBody(BaseModel):
    spent: str
    held: str
    limit: str | None
    remaining: str | None
    resets_at: str

    @classmethod
    def of(cls, window: WindowUsage) -> WindowBody:
        return cls(
            spent=str(window.spent),
            held=str(window.held),
            limit=_money(window.limit),
            remaining=_money(window.remaining),
            resets_at=window.resets_at.isoformat(),
        )


class ModelBody(BaseModel):
    """One model's spend and per-model caps in one scope (``?model=``)."""

    model: str
    held: str
    daily: WindowBody
    monthly: WindowBody

    @classmethod
    def of(cls, usage: ModelUsage) -> ModelBody:
        return cls(
            model=usage.model,
            held=str(usage.held),
            daily=WindowBody.of(usage.daily),
            monthly=WindowBody.of(usage.monthly),
        )


class ScopeBody(BaseModel):
    scope_id: str | None
    held: str
    balance: str | None
    daily: WindowBody
    monthly: WindowBody
    #: ``null`` unless weekly counters are kept
    weekly: WindowBody | None
    #: the sliding minute; ``null`` unless a per-minute cap applies
    minute: WindowBody | None
    #: until when the kill switch refuses the scope; ``null`` when it does not
    kill_switch_until: str | None
    #: the scope's cap action; ``null``: none (or cap actions are off)
    action: str | None
    #: its thresholds, fractions of the daily and monthly caps
    thresholds: list[str]
    #: the model asked for with ``?model=``; ``null`` otherwise
    model: ModelBody | None = None

    @classmethod
    def of(cls, usage: ScopeUsage) -> ScopeBody:
        until = usage.kill_switch_until
        return cls(
            scope_id=usage.scope_id,
            held=str(usage.held),
            balance=_money(usage.balance),
            daily=WindowBody.of(usage.daily),
            monthly=WindowBody.of(usage.monthly),
            weekly=None if usage.weekly is None else WindowBody.of(usage.weekly),
            minute=None if usage.minute is None else WindowBody.of(usage.minute),
            kill_switch_until=None if until is None else until.isoformat(),
            action=usage.action,
            thresholds=[str(t) for t in usage.thresholds],
            model=None if usage.model is None else ModelBody.of(usage.model),
        )


class UsageResponse(BaseModel):
    user_id: str
    project_id: str | None
    unit: str
    scopes: dict[str, ScopeBody]
