"""Facts that are not leases: ``POST /spend`` (money already spent) and
``POST /v1/credits`` (prepaid credits). A fact is never refused for a limit,
and is spooled while Redis is down where the budget has a spool."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request

from spendgate.server.body import read_body
from spendgate.server.deps import budget_of, metrics_of
from spendgate.server.responses import (
    CONFLICT,
    TEAM_ERRORS,
    request_body,
    responses,
)
from spendgate.server.schemas import (
    CreditsRequest,
    CreditsResponse,
    SpendRequest,
    SpendResponse,
)

router = APIRouter()


@router.post(
    "/spend",
    response_model=SpendResponse,
    responses={**responses(401, 408, 413, 422, 503, _409=CONFLICT), **TEAM_ERRORS},
    openapi_extra=request_body(SpendRequest),
    tags=["coreason-compatible"],
)
async def spend(request: Request) -> SpendResponse:
    """Record money already spent: never refused for a limit, spooled when
    Redis is down (where the budget has a spool). An ``idempotency_key``
    replayed returns the first ``entry_id`` with ``replayed: true``."""
    req = await read_body(request, SpendRequest)
    rec = await metrics_of(request).record(
        "spend",
        budget_of(request).record_spend(
            req.user_id,
            req.cost,
            project_id=req.project_id,
            model=req.model,
            idempotency_key=req.idempotency_key,
            metadata=req.metadata,
            team_id=req.team_id,
        ),
    )
    return SpendResponse.of(rec)


@router.post(
    "/v1/credits",
    response_model=CreditsResponse,
    responses=responses(401, 408, 413, 422, 503, _409=CONFLICT),
    openapi_extra=request_body(CreditsRequest),
    tags=["operators"],
)
async def credits(request: Request) -> CreditsResponse:
    """Grant prepaid credits to a user (rounded down to the micro-unit): they
    pay its debt first, then are drawn on in order (lower ``priority``, then
    the earliest ``expires_at``, never-expiring last, then the oldest)."""
    req = await read_body(request, CreditsRequest)
    rec = await metrics_of(request).record(
        "credits",
        budget_of(request).add_credits(
            req.user_id,
            req.amount,
            idempotency_key=req.idempotency_key,
            metadata=req.metadata,
            expires_at=None
            if req.expires_at is None
            else datetime.fromisoformat(req.expires_at),
            priority=req.priority,
            kind=req.kind,
        ),
    )
    return CreditsResponse.of(rec)
