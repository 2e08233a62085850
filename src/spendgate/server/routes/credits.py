"""Prepaid credits beyond ``POST /v1/credits``: a user's balance and grants
(``GET /v1/balance/{user_id}``), refunds (``POST /v1/refunds``, a fact:
spooled while Redis is down) and the expiry sweep
(``POST /v1/credits/sweep``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from spendgate.server.body import read_body
from spendgate.server.credit_schemas import (
    BalanceResponse,
    RefundRequest,
    RefundResponse,
    SweepResponse,
)
from spendgate.server.deps import budget_of, metrics_of
from spendgate.server.fields import UserIdPath
from spendgate.server.responses import request_body, responses
from spendgate.server.schemas import Problem

router = APIRouter()

DryRun = Annotated[bool, Query(description="count what would expire, change nothing")]

_UNKNOWN_ENTRY = {"model": Problem, "description": "no refundable charge of that id"}
_REFUND_CONFLICT = {
    "model": Problem,
    "description": "above what is left to refund of the charge, or an "
    "idempotency key reused with other arguments",
}


@router.get(
    "/v1/balance/{user_id:path}",
    response_model=BalanceResponse,
    responses=responses(401, 404, 422, 503),
    tags=["operators"],
)
async def balance(request: Request, user_id: UserIdPath) -> BalanceResponse:
    """A user's prepaid balance (whether balances are enforced or not), what
    leases hold of it, and the live grants in the order charges draw on them."""
    budget = budget_of(request)
    found = await budget.get_balance(user_id)
    return BalanceResponse.of(user_id, budget.config.unit, found)


@router.post(
    "/v1/refunds",
    response_model=RefundResponse,
    responses={
        **responses(401, 408, 413, 422, 503),
        404: _UNKNOWN_ENTRY,
        409: _REFUND_CONFLICT,
    },
    openapi_extra=request_body(RefundRequest),
    tags=["operators"],
)
async def refund(request: Request) -> RefundResponse:
    """Give back all (no ``amount``) or part of a charge: its day's and
    month's counters go down, the money goes back where it came from (a team
    charge's, whose id ends in ``.<team_id>``: to the team's pool, and the
    member's spending on the team goes down too)."""
    req = await read_body(request, RefundRequest)
    result = await metrics_of(request).record(
        "refunds",
        budget_of(request).refund(
            req.entry_id,
            req.amount,
            reason=req.reason,
            idempotency_key=req.idempotency_key,
        ),
    )
    return RefundResponse.of(result)


@router.post(
    "/v1/credits/sweep",
    response_model=SweepResponse,
    responses=responses(401, 422, 503),
    tags=["operators"],
)
async def sweep(request: Request, dry_run: DryRun = False) -> SweepResponse:
    """Expire what every expired grant has left, with one ``expire`` ledger
    entry each, written once whoever else sweeps (``dry_run``: count only)."""
    report = await budget_of(request).sweep_expired_credits(dry_run=dry_run)
    return SweepResponse.of(report)
