"""The one-call charge: ``POST /v1/deduct`` prices a usage (or takes an
amount) and charges it, ``POST /v1/deduct/fixed`` charges a price book's
fixed job. Each is an admission and a charge in one script: a refusal (a cap,
the balance or a team's pool) is a 429 and nothing changes; a store that
does not answer is a 503 and nothing is charged (no spool: fail closed)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from spendgate.server.body import read_body
from spendgate.server.deduct_schemas import (
    DeductFixedRequest,
    DeductRequest,
    DeductResponse,
)
from spendgate.server.deps import budget_of, metrics_of
from spendgate.server.responses import (
    CONFLICT,
    REFUSED,
    TEAM_ERRORS,
    request_body,
    responses,
)

router = APIRouter()

#: a charge's answers, a team's included
_CHARGE_RESPONSES = {
    **responses(401, 408, 413, 422, 503, _409=CONFLICT, _429=REFUSED),
    **TEAM_ERRORS,
}


@router.post(
    "/v1/deduct",
    response_model=DeductResponse,
    responses=_CHARGE_RESPONSES,
    openapi_extra=request_body(DeductRequest),
    tags=["credits"],
)
async def deduct(request: Request) -> DeductResponse:
    """Price ``usage`` by the active price book (or take ``amount``) and
    charge it in one step: the plan's allowance first, then the grants and
    the balance (always enforced), or ``team_id``'s pool. 429 when a cap,
    the balance above its floor or the pool cannot take it (nothing
    changes); an ``idempotency_key`` replayed answers the first charge with
    ``replayed: true`` (409 when used with other arguments)."""
    req = await read_body(request, DeductRequest)
    result = await metrics_of(request).admit(
        "deduct",
        budget_of(request).deduct(
            req.user_id,
            req.charge(),
            req.project_id,
            req.team_id,
            req.idempotency_key,
            req.metadata,
            model=req.model,
        ),
    )
    return DeductResponse.of(result)


@router.post(
    "/v1/deduct/fixed",
    response_model=DeductResponse,
    responses=_CHARGE_RESPONSES,
    openapi_extra=request_body(DeductFixedRequest),
    tags=["credits"],
)
async def deduct_fixed(request: Request) -> DeductResponse:
    """Charge the active price book's fixed price of ``job``, as
    ``/v1/deduct`` charges, ``team_id``'s pool included (422 when no book is
    active or it prices no such job)."""
    req = await read_body(request, DeductFixedRequest)
    result = await metrics_of(request).admit(
        "deduct_fixed",
        budget_of(request).deduct_fixed(
            req.user_id,
            req.job,
            req.project_id,
            req.idempotency_key,
            req.metadata,
            team_id=req.team_id,
        ),
    )
    return DeductResponse.of(result)
