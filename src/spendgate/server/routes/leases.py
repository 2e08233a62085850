"""Ending a lease: ``POST /v1/settle`` charges its actual cost (a fact),
``POST /v1/release`` voids it. An illegal transition is a 409."""

from __future__ import annotations

from fastapi import APIRouter, Request

from spendgate.server.body import read_body
from spendgate.server.deps import budget_of, metrics_of
from spendgate.server.responses import LEASE_CONFLICT, request_body, responses
from spendgate.server.schemas import (
    ReleaseRequest,
    ReleaseResponse,
    SettleRequest,
    SettleResponse,
)

router = APIRouter()


@router.post(
    "/v1/settle",
    response_model=SettleResponse,
    responses=responses(401, 408, 413, 422, 503, _409=LEASE_CONFLICT),
    openapi_extra=request_body(SettleRequest),
    tags=["leases"],
)
async def settle(request: Request) -> SettleResponse:
    """Charge a lease's actual cost (a fact; ``late`` after expiry).
    Settling again at the same cost replays the first record."""
    req = await read_body(request, SettleRequest)
    rec = await metrics_of(request).record(
        "settle",
        budget_of(request).settle(
            req.lease_id, req.actual_cost, model=req.model, metadata=req.metadata
        ),
    )
    return SettleResponse.of(rec)


@router.post(
    "/v1/release",
    response_model=ReleaseResponse,
    responses=responses(401, 408, 413, 422, 503, _409=LEASE_CONFLICT),
    openapi_extra=request_body(ReleaseRequest),
    tags=["leases"],
)
async def release(request: Request) -> ReleaseResponse:
    """Void a lease: its hold stops counting, nothing is charged.
    409 when it was settled or is unknown."""
    req = await read_body(request, ReleaseRequest)
    released = await budget_of(request).release(req.lease_id)
    return ReleaseResponse(status="released", lease_id=req.lease_id, released=released)
