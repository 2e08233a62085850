"""``POST /v1/adjust``: an operator's correction of one counter, and
``GET /v1/transactions/{user_id}``: a user's ledger entries, newest first.

Both are behind the API key, as every operator route (``/v1/limits``,
``/v1/credits``): a key that may spend for any user may correct and read
any user's account too.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from spendgate.ops.transactions import MAX_TRANSACTIONS
from spendgate.server.body import read_body
from spendgate.server.deps import budget_of
from spendgate.server.errors import RequestProblem
from spendgate.server.fields import UserIdPath
from spendgate.server.ledger_schemas import (
    AdjustRequest,
    AdjustResponse,
    TransactionBody,
    TransactionsResponse,
)
from spendgate.server.responses import (
    CONFLICT,
    SafeJSONResponse,
    request_body,
    responses,
)

router = APIRouter()

_MOMENT = (
    "a day (YYYY-MM-DD, its 00:00 UTC) or an ISO 8601 instant (UTC when it "
    "has no offset)"
)
MomentQuery = Annotated[str | None, Query(max_length=64, description=_MOMENT)]
LimitQuery = Annotated[
    int,
    Query(ge=1, le=MAX_TRANSACTIONS, description="at most this many"),
]


def _moment(text: str | None, name: str) -> datetime | None:
    """``text`` as an aware datetime.

    :raise RequestProblem: 422, not a day or an ISO 8601 instant
    """
    if text is None:
        return None
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise RequestProblem(
            422, f"{name} must be YYYY-MM-DD or an ISO 8601 instant"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _window_at(text: str | None) -> date | datetime | None:
    """The ``at`` of a correction: a day stays a day (``adjust_usage`` takes
    it in the window time zone, where the counters' days are), an instant
    is read as by :func:`_moment`."""
    if text is not None and len(text) == 10:
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass  # (_moment answers 422)
    return _moment(text, "at")


@router.post(
    "/v1/adjust",
    response_model=AdjustResponse,
    responses=responses(401, 408, 413, 422, 503, _409=CONFLICT),
    openapi_extra=request_body(AdjustRequest),
    tags=["operators"],
)
async def adjust(request: Request) -> AdjustResponse:
    """Move one counter, a scope's spent in one day or month, up or down,
    with an ``adjust`` ledger entry. A lowering stops at zero: ``applied``
    says what was applied. An ``idempotency_key`` replayed returns the first
    answer with ``replayed: true``."""
    req = await read_body(request, AdjustRequest)
    done = await budget_of(request).adjust_usage(
        req.scope,
        req.scope_id,
        req.amount,
        req.window,
        req.reason,
        req.idempotency_key,
        at=_window_at(req.at),
    )
    return AdjustResponse.of(done)


@router.get(
    "/v1/transactions/{user_id:path}",
    response_model=TransactionsResponse,
    responses=responses(401, 404, 422, 503),
    tags=["operators"],
)
async def transactions(
    request: Request,
    user_id: UserIdPath,
    since: MomentQuery = None,
    until: MomentQuery = None,
    limit: LimitQuery = 100,
) -> Response:
    """A user's ledger entries (charges, refunds, grants, expiries, the
    adjustments of their counters), newest first, ``since`` (inclusive) to
    ``until`` (exclusive): from Postgres when the server has a
    ``postgres_dsn``, else the newest entries of the Redis ledger stream."""
    budget = budget_of(request)
    found = await budget.list_transactions(
        user_id, _moment(since, "since"), _moment(until, "until"), limit
    )
    body = TransactionsResponse(
        user_id=user_id,
        unit=budget.config.unit,
        source="postgres" if budget.config.postgres_dsn else "stream",
        transactions=[TransactionBody.of(t) for t in found],
    )
    # pydantic serializes at most about 255 levels of nesting, and a fact's
    # metadata may nest deeper (the library takes what JSON encodes): it is
    # encoded by json, as it was stored, rather than failing the listing.
    content = body.model_dump(exclude={"transactions": {"__all__": {"metadata"}}})
    for row, fact in zip(content["transactions"], found, strict=True):
        row["metadata"] = fact.metadata
    return SafeJSONResponse(content)
