"""A lease after its reserve: ``POST /v1/extend`` tops it up (an admission:
429 when refused, 403 for a team lease of a removed member),
``POST /v1/settle`` charges its actual cost (a fact), ``POST /v1/release``
voids it. An illegal transition is a 409."""

from __future__ import annotations

from fastapi import APIRouter, Request

from spendgate.server.body import read_body
from spendgate.server.deps import budget_of, metrics_of
from spendgate.server.responses import (
    LEASE_CONFLICT,
    REFUSED,
    request_body,
    responses,
)
from spendgate.server.schemas import (
    ExtendRequest,
    LeaseResponse,
    Problem,
    ReleaseRequest,
    ReleaseResponse,
    SettleRequest,
    SettleResponse,
)

router = APIRouter()

_NOT_MEMBER = {
    "model": Problem,
    "description": "a team lease whose user is no longer the team's member",
}


@router.post(
    "/v1/extend",
    response_model=LeaseResponse,
    responses={
        **responses(401, 408, 413, 422, 503, _409=LEASE_CONFLICT, _429=REFUSED),
        403: _NOT_MEMBER,
    },
    openapi_extra=request_body(ExtendRequest),
    tags=["leases"],
)
async def extend(request: Request) -> LeaseResponse:
    """Top a live lease up by ``more`` (its ``amount`` is the new total);
    429 when a cap or the balance would be passed (a team lease's: the
    user's caps, the member's caps on the team or the pool; nothing
    changes), 403 for a team lease whose user is no longer the team's
    member, 409 when the lease is settled, released, expired or unknown,
    or the idempotency key was used with other arguments."""
    req = await read_body(request, ExtendRequest)
    lease = await metrics_of(request).admit(
        "extend",
        budget_of(request).extend(
            req.lease_id,
            req.more,
            ttl_seconds=req.ttl_seconds,
            idempotency_key=req.idempotency_key,
        ),
    )
    return LeaseResponse.of(lease)


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
