"""Every error the service answers, mapped once.

Status codes and metric labels come from :data:`spendgate.errors.OUTCOMES`
(through :func:`server_outcome`); this module only words the bodies: a
:class:`~spendgate.server.schemas.Problem` for errors, a
:class:`~spendgate.server.schemas.Refusal` for a 429. A 503 counts a store
error in ``spendgate_redis_errors_total`` under the table's label, and a 5xx
that is not the store's is logged (one line) and answered without details.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from loguru import logger
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from spendgate.errors import (
    UNEXPECTED,
    BudgetExceededError,
    BudgetUnavailableError,
    FeatureLimitExceededError,
    LedgerUnavailableError,
    Outcome,
    SpendgateError,
    SpoolFullError,
    StorageError,
    outcome_of,
)
from spendgate.server.deps import clock_of, metrics_of
from spendgate.server.responses import SafeJSONResponse
from spendgate.server.schemas import Problem, Refusal

__all__ = [
    "UNAVAILABLE_RETRY_AFTER_SECONDS",
    "RequestProblem",
    "field_errors",
    "install_handlers",
    "problem",
    "server_outcome",
    "summary",
]

#: ``Retry-After`` of a 503: the store usually answers again within seconds
UNAVAILABLE_RETRY_AFTER_SECONDS = 1

#: where the server's answer is not the table's: the server has always answered
#: ``LedgerUnavailableError`` as an unexpected error (500), not 503. It never
#: talks to Postgres, so it meets this error only through a bug.
_SERVER_OUTCOMES: tuple[tuple[type[BaseException], Outcome], ...] = (
    (LedgerUnavailableError, UNEXPECTED),
)


class RequestProblem(Exception):
    """An answer with a 4xx status and a :class:`Problem` body."""

    def __init__(
        self,
        status_code: int,
        detail: str,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.errors = errors
        self.headers = headers


def server_outcome(exc: BaseException) -> Outcome:
    """The outcome the server reports ``exc`` with: the table's, but for the
    exceptions in ``_SERVER_OUTCOMES``."""
    for kind, outcome in _SERVER_OUTCOMES:
        if isinstance(exc, kind):
            return outcome
    return outcome_of(exc)


def problem(
    status_code: int,
    detail: str,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> SafeJSONResponse:
    """An error answer: a :class:`Problem` (``errors`` left out when ``None``)."""
    body = Problem(detail=detail, errors=errors).model_dump(exclude_none=True)
    return SafeJSONResponse(body, status_code=status_code, headers=headers)


def field_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Pydantic's errors as location, message and type only: the input (and
    pydantic's context) may hold values JSON cannot carry, and echoing secrets
    back helps nobody."""
    return [
        {
            "loc": [str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in errors
    ]


def summary(errors: list[dict[str, Any]]) -> str:
    """One line naming the first five invalid fields."""
    parts = []
    for error in errors[:5]:
        where = ".".join(p for p in error["loc"] if p != "body") or "body"
        parts.append(f"{where}: {error['msg']}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "invalid request: " + "; ".join(parts) + more


# -- handlers ------------------------------------------------------------------------


async def on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestProblem)
    headers = dict(exc.headers or {})
    if exc.status_code == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return problem(exc.status_code, exc.detail, exc.errors, headers or None)


async def on_disconnect(request: Request, exc: Exception) -> Response:
    """The client went away mid-body: one log line, not a traceback. The
    answer reaches nobody; 499 is nginx's "client closed request"."""
    logger.info(
        "spendgate server: client disconnected before sending the whole body of {} {}",
        request.method,
        request.url.path,
    )
    return Response(status_code=499)


async def on_request_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = field_errors(exc.errors())
    return problem(422, summary(errors), errors)


async def on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers) if exc.headers else None
    return problem(exc.status_code, str(exc.detail), headers=headers)


async def on_spendgate_error(request: Request, exc: Exception) -> Response:
    """Every :class:`SpendgateError`: the status from the table; a refusal
    answers why and when to retry, a 503 counts a store error."""
    outcome = server_outcome(exc)
    if outcome.status == 429 and isinstance(
        exc, BudgetExceededError | FeatureLimitExceededError
    ):
        now = clock_of(request)()
        if isinstance(exc, BudgetExceededError):
            body = Refusal.model_validate(exc.to_json(now))
        else:
            body = _feature_refusal(exc, now)
        return SafeJSONResponse(
            body.model_dump(),
            status_code=429,
            headers={"Retry-After": str(body.retry_after_seconds)},
        )
    if outcome.status == 503:
        metrics_of(request).redis_errors.labels(outcome.metric).inc()
        return _unavailable(request, exc)
    if outcome.status >= 500:
        return await on_unexpected(request, exc)
    return problem(outcome.status, str(exc))


def _feature_refusal(exc: FeatureLimitExceededError, now: datetime) -> Refusal:
    """A feature limit's refusal as a refused budget says it: scope
    ``user``, the limit's period as the window, calls as the limit and
    what was spent; retry when the period ends."""
    wait = max(1, math.ceil((exc.resets_at - now).total_seconds()))
    return Refusal(
        status="refused",
        detail=str(exc),
        scope="user",
        scope_id=exc.user_id,
        window=exc.period,
        limit=str(exc.limit),
        spent=str(exc.used),
        held=None,
        requested="1",
        resets_at=exc.resets_at.isoformat(),
        retry_after_seconds=wait,
    )


def _unavailable(request: Request, exc: Exception) -> Response:
    if isinstance(exc, BudgetUnavailableError):
        return problem(
            503,
            str(exc),
            headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)},
        )
    if isinstance(exc, SpoolFullError):
        return problem(503, f"budget store unavailable and spool full: {exc}")
    if isinstance(exc, StorageError):
        # Redis answered with an unexpected error: a bug or a damaged key, never
        # the caller's input. 503 tells clients to retry or fail over.
        logger.error("spendgate server: storage error on {}: {}", request.url.path, exc)
        return problem(503, "budget store error; see the server log")
    return problem(503, str(exc))


async def on_unexpected(request: Request, exc: Exception) -> Response:
    """A bug: logged, answered 500 without its details."""
    logger.error(
        "spendgate server: {} on {}: {}", type(exc).__name__, request.url.path, exc
    )
    return problem(500, f"internal error: {type(exc).__name__}")


def install_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app``: every error becomes a JSON answer."""
    app.add_exception_handler(RequestProblem, on_problem)
    app.add_exception_handler(ClientDisconnect, on_disconnect)
    app.add_exception_handler(RequestValidationError, on_request_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(SpendgateError, on_spendgate_error)
    # Starlette gives the handler of Exception to its outermost middleware:
    # an unexpected bug answers 500 JSON (and is still raised to the server).
    app.add_exception_handler(Exception, on_unexpected)
