"""The request and response models of ``POST /v1/adjust`` and
``GET /v1/transactions/{user_id}`` (as :mod:`spendgate.server.schemas`:
strict requests, responses built by their ``of`` constructors, amounts as
exact decimal strings, instants as ISO 8601)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from spendgate.corrections import Adjustment, Transaction
from spendgate.server.fields import Id, SignedAmount

_STRICT = ConfigDict(extra="forbid", strict=True)


class AdjustRequest(BaseModel):
    """``POST /v1/adjust``: move one counter up (a positive amount) or down
    (a negative one); a lowering stops at zero."""

    model_config = _STRICT
    scope: Literal["user", "project", "global"]
    #: the user or project id (left out for global)
    scope_id: Id | None = None
    amount: SignedAmount
    window: Literal["daily", "monthly"] = "daily"
    #: a day (``YYYY-MM-DD``) or an ISO 8601 instant in the window to correct
    #: (UTC when it has no offset); the current window when left out
    at: str | None = Field(default=None, max_length=64)
    reason: str | None = Field(default=None, max_length=1024)
    idempotency_key: Id | None = None

    @model_validator(mode="after")
    def _scoped(self) -> AdjustRequest:
        # (the library's message names its argument, user_id or project_id,
        # a field this body does not take)
        if self.scope != "global" and self.scope_id is None:
            raise ValueError(f"scope_id is required for scope {self.scope!r}")
        return self


class AdjustResponse(BaseModel):
    status: Literal["adjusted"]
    entry_id: str
    replayed: bool
    spooled: bool
    scope: str
    scope_id: str | None
    window: str
    #: the window corrected: ``YYYY-MM-DD`` or ``YYYY-MM``
    period: str
    requested: str
    #: the signed amount applied (``null`` when spooled)
    applied: str | None
    #: the counter after (``null`` when spooled)
    spent_after: str | None
    occurred_at: str

    @classmethod
    def of(cls, done: Adjustment) -> AdjustResponse:
        return cls(
            status="adjusted",
            entry_id=done.entry_id,
            replayed=done.replayed,
            spooled=done.spooled,
            scope=done.scope,
            scope_id=done.scope_id,
            window=done.window,
            period=done.period,
            requested=str(done.requested),
            applied=None if done.applied is None else str(done.applied),
            spent_after=None if done.spent_after is None else str(done.spent_after),
            occurred_at=done.occurred_at.isoformat(),
        )


class TransactionBody(BaseModel):
    entry_id: str
    kind: str
    occurred_at: str
    #: non-negative, its sign the kind's; an ``adjust``'s is signed
    amount: str
    user_id: str | None
    project_id: str | None
    model: str | None
    link_id: str | None
    grant_id: str | None
    team_id: str | None
    scope: str | None
    window: str | None
    idempotency_key: str | None
    lease_id: str | None
    price_version: int | None
    #: a charge: the part of ``amount`` a plan's allowance paid (null: none)
    allowance_used: str | None
    metadata: dict[str, Any] | None

    @classmethod
    def of(cls, t: Transaction) -> TransactionBody:
        return cls(
            entry_id=t.entry_id,
            kind=t.kind,
            occurred_at=t.occurred_at.isoformat(),
            amount=str(t.amount),
            user_id=t.user_id,
            project_id=t.project_id,
            model=t.model,
            link_id=t.link_id,
            grant_id=t.grant_id,
            team_id=t.team_id,
            scope=t.scope,
            window=t.window,
            idempotency_key=t.idempotency_key,
            lease_id=t.lease_id,
            price_version=t.price_version,
            allowance_used=None if t.allowance_used is None else str(t.allowance_used),
            metadata=t.metadata,
        )


class TransactionsResponse(BaseModel):
    user_id: str
    unit: str
    #: ``postgres`` (the ledger table) or ``stream`` (the newest entries of
    #: the Redis ledger stream, without Postgres)
    source: Literal["postgres", "stream"]
    transactions: list[TransactionBody]
