"""Admission: ``POST /check`` (may this be spent now?) and ``POST /v1/reserve``
(admit and hold it). Both count a decision in the metrics; a refusal is a 429
with ``Retry-After``, a store that does not answer a 503 (fail closed)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from spendgate.server.body import read_body
from spendgate.server.deps import budget_of, metrics_of
from spendgate.server.responses import (
    CONFLICT,
    REFUSED,
    TEAM_ERRORS,
    request_body,
    responses,
)
from spendgate.server.schemas import (
    CheckRequest,
    CheckResponse,
    LeaseResponse,
    ReserveRequest,
    ReserveUpToRequest,
)

router = APIRouter()


@router.post(
    "/check",
    response_model=CheckResponse,
    responses=responses(401, 408, 413, 422, 503, _429=REFUSED),
    openapi_extra=request_body(CheckRequest),
    tags=["coreason-compatible"],
)
async def check(request: Request) -> CheckResponse:
    """May ``user_id`` spend ``estimated_cost`` now? Changes nothing.

    200 when admitted, with the smallest amount left over every capped
    window and balance; 429 with ``Retry-After`` when refused.
    """
    req = await read_body(request, CheckRequest)
    remaining = await metrics_of(request).admit(
        "check",
        budget_of(request).remaining(
            req.user_id, req.project_id, req.estimated_cost, model=req.model
        ),
    )
    return CheckResponse.of(req.user_id, req.project_id, remaining)


@router.post(
    "/v1/reserve",
    response_model=LeaseResponse,
    responses={
        **responses(401, 408, 413, 422, 503, _409=CONFLICT, _429=REFUSED),
        **TEAM_ERRORS,
    },
    openapi_extra=request_body(ReserveRequest),
    tags=["leases"],
)
async def reserve(request: Request) -> LeaseResponse:
    """Admit ``amount`` and hold it until settled, released or expired."""
    req = await read_body(request, ReserveRequest)
    lease = await metrics_of(request).admit(
        "reserve",
        budget_of(request).reserve(
            req.user_id,
            req.amount,
            project_id=req.project_id,
            ttl_seconds=req.ttl_seconds,
            idempotency_key=req.idempotency_key,
            team_id=req.team_id,
            model=req.model,
        ),
    )
    return LeaseResponse.of(lease)


@router.post(
    "/v1/reserve_up_to",
    response_model=LeaseResponse,
    responses={
        **responses(401, 408, 413, 422, 503, _409=CONFLICT, _429=REFUSED),
        **TEAM_ERRORS,
    },
    openapi_extra=request_body(ReserveUpToRequest),
    tags=["leases"],
)
async def reserve_up_to(request: Request) -> LeaseResponse:
    """Hold as much as fits between ``min_amount`` and ``max_amount`` (the
    lease's ``amount`` is what was granted); 429 when not even
    ``min_amount`` fits."""
    req = await read_body(request, ReserveUpToRequest)
    lease = await metrics_of(request).admit(
        "reserve_up_to",
        budget_of(request).reserve_up_to(
            req.user_id,
            req.max_amount,
            req.min_amount,
            project_id=req.project_id,
            ttl_seconds=req.ttl_seconds,
            idempotency_key=req.idempotency_key,
            team_id=req.team_id,
            model=req.model,
        ),
    )
    return LeaseResponse.of(lease)
