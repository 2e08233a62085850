"""The HTTP budget service: ``spendgate serve`` (FastAPI + uvicorn).

A drop-in for coreason-budget's server (``POST /check``, ``POST /spend``,
``GET /health``) plus leases, usage, credits, limits and Prometheus metrics.
Unlike it, this one:

- authenticates every caller but ``/health`` with a bearer API key
  (``SPENDGATE_API_KEYS``, compared in constant time) and takes the user from
  the body the authenticated caller sent, never from an unsigned header;
- fails closed with 503 (not 500) when Redis does not answer, while facts are
  still accepted (spooled) where the budget has a spool;
- reads amounts exactly: JSON numbers are parsed as ``Decimal`` (``0.1`` stays
  ``0.1``), strings are accepted too, and amounts are answered as strings;
- answers every malformed input with a 4xx: 422 for what does not validate,
  413 for a body above the size limit.

Status codes: 200 ok, 401 no valid key, 409 idempotency conflict or illegal
lease transition, 413 body too large, 422 invalid input, 429 refused (with
``Retry-After``), 503 store unavailable.

Importing this module needs the ``server`` extra (``pip install
'spendgate[server]'``); ``import spendgate`` never imports it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

try:
    from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "spendgate's server needs the 'server' extra: pip install 'spendgate[server]'"
    ) from exc
from loguru import logger
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
)
from starlette.exceptions import HTTPException as StarletteHTTPException

from spendgate.config import BudgetConfig, load_config
from spendgate.core.money import MAX_AMOUNT, to_decimal
from spendgate.errors import (
    BALANCE_RETRY_AFTER_SECONDS,
    BudgetExceededError,
    BudgetUnavailableError,
    ConfigurationError,
    IdempotencyConflictError,
    InvalidArgumentError,
    InvalidIdTypeError,
    LeaseStateError,
    SpendgateError,
    SpoolFullError,
    StorageError,
)
from spendgate.manager import UNSET, BudgetManager
from spendgate.models import Limits, ScopeUsage, SpendRecord, WindowUsage
from spendgate.server.metrics import CONTENT_TYPE_LATEST, ServerMetrics

__all__ = [
    "BALANCE_RETRY_AFTER_SECONDS",
    "DEFAULT_MAX_BODY_BYTES",
    "INSECURE_ENV",
    "create_app",
    "create_app_from_env",
]

#: the largest request body accepted, in bytes (the default metadata limit is
#: 8 KiB; ids are at most 512 characters by default)
DEFAULT_MAX_BODY_BYTES = 65_536
#: ``Retry-After`` of a 503: the store usually answers again within seconds
UNAVAILABLE_RETRY_AFTER_SECONDS = 1
#: set to ``1`` by ``spendgate serve --insecure-no-auth`` for its workers
INSECURE_ENV = "SPENDGATE_SERVE_INSECURE_NO_AUTH"

Clock = Callable[[], datetime]
M = TypeVar("M", bound=BaseModel)


# -- request models ------------------------------------------------------------------


def _exact_amount(value: object) -> Decimal:
    # JSON numbers arrive as Decimal (the body is parsed with parse_float=Decimal)
    # or int; strings are read by the same rules as the Python API.
    return to_decimal(value)


#: an amount: a JSON number or a decimal string, read exactly
Amount = Annotated[
    Decimal,
    BeforeValidator(_exact_amount),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": int(MAX_AMOUNT)},
                {"type": "string", "pattern": r"^[0-9]{1,10}(\.[0-9]{1,12})?$"},
            ],
            "description": "an exact amount: a JSON number or a decimal string, "
            f"0 to {MAX_AMOUNT}",
        }
    ),
]


def _not_blank(value: str) -> str:
    if value.isspace():
        raise ValueError("must not be blank")
    return value


#: an opaque id: any string with a non-space character (the configured
#: ``max_id_length`` is checked by the budget)
Id = Annotated[
    str,
    StringConstraints(min_length=1),
    AfterValidator(_not_blank),
    WithJsonSchema({"type": "string", "minLength": 1, "pattern": r"\S"}),
]
ModelName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=256),
    AfterValidator(_not_blank),
    WithJsonSchema(
        {"type": "string", "minLength": 1, "maxLength": 256, "pattern": r"\S"}
    ),
]
Metadata = dict[str, Any]

_STRICT = ConfigDict(extra="forbid", strict=True)

# Annotations of endpoints and dependencies live at module level: with
# postponed annotations FastAPI resolves them in the module's globals.
_BEARER = HTTPBearer(auto_error=False, description="an API key from SPENDGATE_API_KEYS")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]
ScopePath = Annotated[
    Literal["user", "project", "global"], Path(description="the scope")
]
ScopeIdPath = Annotated[
    str,
    Path(
        min_length=1,
        description="the user or project id (anything, e.g. '-', for global)",
    ),
]
UserIdPath = Annotated[str, Path(min_length=1, description="the user id")]
ProjectQuery = Annotated[
    str | None, Query(min_length=1, description="also report this project")
]


class CheckRequest(BaseModel):
    """``POST /check``: may this user spend ``estimated_cost`` now?"""

    model_config = _STRICT
    user_id: Id
    project_id: Id | None = None
    estimated_cost: Amount = Decimal(0)


class SpendRequest(BaseModel):
    """``POST /spend``: record money already spent (a fact)."""

    model_config = _STRICT
    user_id: Id
    cost: Amount
    project_id: Id | None = None
    model: ModelName | None = None
    idempotency_key: Id | None = None
    metadata: Metadata | None = None


class ReserveRequest(BaseModel):
    """``POST /v1/reserve``: hold ``amount`` until settled, released or expired."""

    model_config = _STRICT
    user_id: Id
    amount: Amount
    project_id: Id | None = None
    ttl_seconds: Annotated[int, Field(gt=0, le=7 * 86400)] | None = None
    idempotency_key: Id | None = None


class SettleRequest(BaseModel):
    """``POST /v1/settle``: charge a lease's actual cost."""

    model_config = _STRICT
    lease_id: Id
    actual_cost: Amount
    model: ModelName | None = None
    metadata: Metadata | None = None


class ReleaseRequest(BaseModel):
    """``POST /v1/release``: void a lease."""

    model_config = _STRICT
    lease_id: Id


class CreditsRequest(BaseModel):
    """``POST /v1/credits``: add prepaid credits to a user's balance."""

    model_config = _STRICT
    user_id: Id
    amount: Amount
    idempotency_key: Id | None = None
    metadata: Metadata | None = None


class LimitsRequest(BaseModel):
    """``PUT /v1/limits/{scope}/{id}``: a field left out keeps its value,
    ``null`` removes the cap, an amount sets it."""

    model_config = _STRICT
    daily: Amount | None = None
    monthly: Amount | None = None


# -- response models (the OpenAPI document; bodies are built by hand) ----------------


class Problem(BaseModel):
    """An error: what went wrong, and per field for invalid input."""

    detail: str
    errors: list[dict[str, Any]] | None = None


class CheckResponse(BaseModel):
    status: Literal["allowed"]
    user_id: str
    project_id: str | None
    #: the smallest amount left over every capped window and balance
    remaining: str | None


class Refusal(BaseModel):
    """429: the request would pass a cap or the balance."""

    status: Literal["refused"]
    detail: str
    scope: str | None
    scope_id: str | None
    window: str | None
    limit: str | None
    spent: str | None
    held: str | None
    requested: str | None
    resets_at: str | None
    retry_after_seconds: int


class SpendResponse(BaseModel):
    status: Literal["recorded"]
    entry_id: str
    replayed: bool
    spooled: bool
    user_id: str
    project_id: str | None
    model: str | None
    amount: str
    occurred_at: str


class LeaseResponse(BaseModel):
    lease_id: str
    expires_at: str
    amount: str
    user_id: str
    project_id: str | None
    replayed: bool


class SettleResponse(BaseModel):
    status: Literal["settled"]
    entry_id: str
    lease_id: str | None
    replayed: bool
    spooled: bool
    late: bool
    amount: str
    estimate: str | None
    user_id: str
    project_id: str | None
    model: str | None
    occurred_at: str


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


class WindowBody(BaseModel):
    spent: str
    held: str
    limit: str | None
    remaining: str | None
    resets_at: str


class ScopeBody(BaseModel):
    scope_id: str | None
    held: str
    balance: str | None
    daily: WindowBody
    monthly: WindowBody


class UsageResponse(BaseModel):
    user_id: str
    project_id: str | None
    unit: str
    scopes: dict[str, ScopeBody]


class LimitsResponse(BaseModel):
    scope: str
    scope_id: str | None
    daily: str | None
    monthly: str | None
    #: windows with a per-entity override (the others follow the defaults)
    overridden: list[str]


class HealthResponse(BaseModel):
    status: str
    redis: str


# -- responses and errors ------------------------------------------------------------


class SafeJSONResponse(JSONResponse):
    """JSON that always encodes: ASCII escapes, so an id holding a lone
    surrogate (valid JSON input) cannot turn an answer into a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(
            content,
            ensure_ascii=True,
            allow_nan=False,
            separators=(",", ":"),
            default=str,
        ).encode("ascii")


class RequestProblem(Exception):
    """An answer with a 4xx status and a :class:`Problem` body."""

    def __init__(
        self, status_code: int, detail: str, errors: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.errors = errors


def _problem(
    status_code: int,
    detail: str,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> SafeJSONResponse:
    body: dict[str, Any] = {"detail": detail}
    if errors is not None:
        body["errors"] = errors
    return SafeJSONResponse(body, status_code=status_code, headers=headers)


def _field_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    # Only location, message and type: the input (and pydantic's context) may
    # hold values JSON cannot carry, and echoing secrets back helps nobody.
    out = []
    for error in errors:
        out.append(
            {
                "loc": [str(part) for part in error.get("loc", ())],
                "msg": str(error.get("msg", "")),
                "type": str(error.get("type", "")),
            }
        )
    return out


def _summary(errors: list[dict[str, Any]]) -> str:
    parts = []
    for error in errors[:5]:
        where = ".".join(p for p in error["loc"] if p != "body") or "body"
        parts.append(f"{where}: {error['msg']}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return "invalid request: " + "; ".join(parts) + more


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _when(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _spend_body(record: SpendRecord) -> dict[str, Any]:
    return {
        "status": "recorded",
        "entry_id": record.entry_id,
        "replayed": record.replayed,
        "spooled": record.spooled,
        "user_id": record.user_id,
        "project_id": record.project_id,
        "model": record.model,
        "amount": str(record.amount),
        "occurred_at": record.occurred_at.isoformat(),
    }


def _window_body(window: WindowUsage) -> dict[str, Any]:
    return {
        "spent": str(window.spent),
        "held": str(window.held),
        "limit": _money(window.limit),
        "remaining": _money(window.remaining),
        "resets_at": window.resets_at.isoformat(),
    }


def _scope_body(usage: ScopeUsage) -> dict[str, Any]:
    return {
        "scope_id": usage.scope_id,
        "held": str(usage.held),
        "balance": _money(usage.balance),
        "daily": _window_body(usage.daily),
        "monthly": _window_body(usage.monthly),
    }


def _limits_body(limits: Limits) -> dict[str, Any]:
    return {
        "scope": limits.scope,
        "scope_id": limits.scope_id,
        "daily": _money(limits.daily),
        "monthly": _money(limits.monthly),
        "overridden": sorted(limits.overridden),
    }


def _route_of(scope: MutableMapping[str, Any]) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class _LatencyMiddleware:
    """Times every request into the latency histogram, by route template."""

    def __init__(self, app: Any, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.metrics.latency.labels(
                _route_of(scope), scope.get("method", "")
            ).observe(time.perf_counter() - started)


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "no valid API key"},
    413: {"model": Problem, "description": "the body is above the size limit"},
    422: {"model": Problem, "description": "invalid input"},
    503: {"model": Problem, "description": "the budget store did not answer"},
}


def _responses(*codes: int, **extra: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {code: _ERRORS[code] for code in codes}
    for code, spec in extra.items():
        out[int(code.lstrip("_"))] = spec
    return out


_REFUSED = {
    "model": Refusal,
    "description": "refused: a cap or the balance would be passed",
}
_CONFLICT = {
    "model": Problem,
    "description": "idempotency key reused with other arguments",
}
_LEASE_CONFLICT = {
    "model": Problem,
    "description": "illegal lease transition (settle after release, unknown lease, "
    "settle at another cost)",
}


# -- the app -------------------------------------------------------------------------


def create_app(
    source: BudgetConfig | BudgetManager | None = None,
    *,
    api_keys: Sequence[str] | None = None,
    insecure_no_auth: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    clock: Clock | None = None,
) -> FastAPI:
    """Build the HTTP app over one budget.

    :param source: a :class:`BudgetConfig` (the app opens and closes its own
        :class:`BudgetManager`), a manager (used as it is, not closed), or
        ``None`` for the config from the ``SPENDGATE_*`` environment
    :param api_keys: the accepted bearer keys; defaults to the config's
        ``api_keys`` (``SPENDGATE_API_KEYS``)
    :param insecure_no_auth: allow starting without any key: every caller is
        then trusted (logged as a warning). Without it, no keys is an error.
    :param max_body_bytes: larger request bodies are answered with 413
    :param clock: the clock ``Retry-After`` is counted from; defaults to the
        system clock (tests pass the budget's clock)
    :raise ConfigurationError: no API key is configured and
        ``insecure_no_auth`` is not set
    """
    if isinstance(source, BudgetManager):
        budget, owned = source, False
    else:
        budget, owned = (
            BudgetManager(source if source is not None else load_config()),
            True,
        )
    keys = list(api_keys) if api_keys is not None else budget.config.api_key_list()
    keys = [k for k in keys if k]
    if not keys and not insecure_no_auth:
        raise ConfigurationError(
            "no API keys configured: set SPENDGATE_API_KEYS (comma-separated), or "
            "start with --insecure-no-auth to accept every caller"
        )
    if not keys:
        logger.warning(
            "spendgate server: authentication is DISABLED (--insecure-no-auth): "
            "any caller can spend, credit and change limits for any user"
        )
    # Digests have one length, so compare_digest compares in constant time
    # whatever the lengths of the keys and of what the caller sent.
    digests = [hashlib.sha256(k.encode()).digest() for k in keys]
    now: Clock = clock or (lambda: datetime.now(UTC))
    metrics = ServerMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await budget.open()
        if budget.embedded:
            logger.warning(
                "spendgate server: running on the embedded in-process store; budgets "
                "are lost on exit and not shared between workers. Set "
                "SPENDGATE_REDIS_URL for production."
            )
        yield
        if owned:
            await budget.aclose()

    app = FastAPI(
        title="spendgate",
        summary="Budget guard for LLM calls: admission, leases, facts, usage, limits.",
        description=(
            "Amounts are exact: send JSON numbers or decimal strings; answers "
            "carry amounts as strings. Every endpoint but /health needs "
            "`Authorization: Bearer <key>`."
        ),
        version=_version(),
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,
        # The OpenAPI document is served below, behind the API key like
        # everything but /health; the browsable docs could not send the key.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.budget = budget
    app.state.metrics = metrics
    app.add_middleware(_LatencyMiddleware, metrics=metrics)

    async def authenticate(credentials: Credentials) -> None:
        if not digests:
            return
        if credentials is not None:
            given = hashlib.sha256(credentials.credentials.encode()).digest()
            # Every key is compared, so the time taken says nothing about which matched.
            matched = False
            for digest in digests:
                matched |= hmac.compare_digest(given, digest)
            if matched:
                return
        raise RequestProblem(
            401, "a valid API key is required: Authorization: Bearer <key>"
        )

    async def read_body(request: Request, model: type[M]) -> M:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_body_bytes:
            raise RequestProblem(
                413, f"request body above the limit of {max_body_bytes} bytes"
            )
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise RequestProblem(
                    413, f"request body above the limit of {max_body_bytes} bytes"
                )
            chunks.append(chunk)
        raw = b"".join(chunks)
        if not raw.strip():
            raise RequestProblem(
                422, "request body is empty: a JSON object is expected"
            )
        try:
            # parse_float=Decimal keeps 0.1 exactly 0.1; NaN and Infinity,
            # which Python's json accepts, are refused.
            data = json.loads(raw, parse_float=Decimal, parse_constant=_no_constant)
        except (ValueError, RecursionError) as exc:
            raise RequestProblem(
                422, f"request body is not valid JSON: {exc}"
            ) from None
        if not isinstance(data, dict):
            kind = "null" if data is None else type(data).__name__
            raise RequestProblem(422, f"request body must be a JSON object, not {kind}")
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            errors = _field_errors(
                exc.errors(
                    include_url=False, include_context=False, include_input=False
                )
            )
            raise RequestProblem(422, _summary(errors), errors) from None

    # -- error handlers: every SpendgateError has a 4xx or 503 ------------------

    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestProblem)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return _problem(exc.status_code, exc.detail, exc.errors, headers)

    async def on_refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BudgetExceededError)
        body = exc.to_json(now())
        return SafeJSONResponse(
            body,
            status_code=429,
            headers={"Retry-After": str(body["retry_after_seconds"])},
        )

    async def on_unavailable(request: Request, exc: Exception) -> Response:
        metrics.redis_errors.labels("unavailable").inc()
        return _problem(
            503,
            str(exc),
            headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)},
        )

    async def on_spool_full(request: Request, exc: Exception) -> Response:
        metrics.redis_errors.labels("unavailable").inc()
        return _problem(503, f"budget store unavailable and spool full: {exc}")

    async def on_storage(request: Request, exc: Exception) -> Response:
        # Redis answered with an unexpected error: a bug or a damaged key, never
        # the caller's input. 503 tells clients to retry or fail over.
        metrics.redis_errors.labels("storage").inc()
        logger.error("spendgate server: storage error on {}: {}", request.url.path, exc)
        return _problem(503, "budget store error; see the server log")

    async def on_invalid(request: Request, exc: Exception) -> Response:
        return _problem(422, str(exc))

    async def on_conflict(request: Request, exc: Exception) -> Response:
        return _problem(409, str(exc))

    async def on_other(request: Request, exc: Exception) -> Response:
        logger.error(
            "spendgate server: {} on {}: {}", type(exc).__name__, request.url.path, exc
        )
        return _problem(500, f"internal error: {type(exc).__name__}")

    async def on_request_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = _field_errors(exc.errors())
        return _problem(422, _summary(errors), errors)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers) if exc.headers else None
        return _problem(exc.status_code, str(exc.detail), headers=headers)

    app.add_exception_handler(RequestProblem, on_problem)
    app.add_exception_handler(RequestValidationError, on_request_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(BudgetExceededError, on_refused)
    app.add_exception_handler(BudgetUnavailableError, on_unavailable)
    app.add_exception_handler(SpoolFullError, on_spool_full)
    app.add_exception_handler(StorageError, on_storage)
    app.add_exception_handler(InvalidArgumentError, on_invalid)
    app.add_exception_handler(InvalidIdTypeError, on_invalid)
    app.add_exception_handler(IdempotencyConflictError, on_conflict)
    app.add_exception_handler(LeaseStateError, on_conflict)
    app.add_exception_handler(ConfigurationError, on_other)
    app.add_exception_handler(SpendgateError, on_other)

    # -- counting outcomes ------------------------------------------------------

    async def admit(endpoint: str, call: Awaitable[Any]) -> Any:
        try:
            result = await call
        except BudgetUnavailableError:
            metrics.decision(endpoint, "unavailable")
            raise
        except BudgetExceededError as exc:
            metrics.decision(endpoint, "refused", exc.scope, exc.window)
            raise
        except IdempotencyConflictError:
            metrics.decision(endpoint, "conflict")
            raise
        except SpendgateError:
            metrics.decision(endpoint, "invalid")
            raise
        metrics.decision(endpoint, "allowed")
        return result

    async def record(endpoint: str, call: Awaitable[SpendRecord]) -> SpendRecord:
        try:
            result = await call
        except (BudgetUnavailableError, SpoolFullError):
            metrics.fact(endpoint, "unavailable")
            raise
        except IdempotencyConflictError:
            metrics.fact(endpoint, "conflict")
            raise
        except LeaseStateError:
            metrics.fact(endpoint, "lease_state")
            raise
        except SpendgateError:
            metrics.fact(endpoint, "invalid")
            raise
        outcome = (
            "spooled"
            if result.spooled
            else "replayed"
            if result.replayed
            else "recorded"
        )
        metrics.fact(endpoint, outcome)
        return result

    # -- endpoints ----------------------------------------------------------------

    @app.get(
        "/health",
        response_model=HealthResponse,
        responses={
            503: {"model": HealthResponse, "description": "Redis is not answering"}
        },
        tags=["service"],
    )
    async def health() -> Response:
        """Liveness and Redis reachability; needs no API key."""
        try:
            await budget.redis.ping()
        except Exception as exc:  # any failure to answer means "not healthy"
            metrics.redis_errors.labels("unavailable").inc()
            logger.warning("spendgate server: health check failed: {}", exc)
            return SafeJSONResponse(
                {"status": "unhealthy", "redis": "disconnected"}, status_code=503
            )
        return SafeJSONResponse({"status": "healthy", "redis": "connected"})

    api = APIRouter(dependencies=[Depends(authenticate)])

    def body_of(model: type[BaseModel]) -> dict[str, Any]:
        return {
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": model.model_json_schema()}},
            }
        }

    @api.post(
        "/check",
        response_model=CheckResponse,
        responses=_responses(401, 413, 422, 503, _429=_REFUSED),
        openapi_extra=body_of(CheckRequest),
        tags=["coreason-compatible"],
    )
    async def check(request: Request) -> Response:
        """May ``user_id`` spend ``estimated_cost`` now? Changes nothing.

        200 when admitted, with the smallest amount left over every capped
        window and balance; 429 with ``Retry-After`` when refused.
        """
        req = await read_body(request, CheckRequest)
        remaining = await admit(
            "check", budget.remaining(req.user_id, req.project_id, req.estimated_cost)
        )
        return SafeJSONResponse(
            {
                "status": "allowed",
                "user_id": req.user_id,
                "project_id": req.project_id,
                "remaining": _money(remaining),
            }
        )

    @api.post(
        "/spend",
        response_model=SpendResponse,
        responses=_responses(401, 413, 422, 503, _409=_CONFLICT),
        openapi_extra=body_of(SpendRequest),
        tags=["coreason-compatible"],
    )
    async def spend(request: Request) -> Response:
        """Record money already spent: never refused for a limit, spooled when
        Redis is down (where the budget has a spool). An ``idempotency_key``
        replayed returns the first ``entry_id`` with ``replayed: true``."""
        req = await read_body(request, SpendRequest)
        rec = await record(
            "spend",
            budget.record_spend(
                req.user_id,
                req.cost,
                project_id=req.project_id,
                model=req.model,
                idempotency_key=req.idempotency_key,
                metadata=req.metadata,
            ),
        )
        return SafeJSONResponse(_spend_body(rec))

    @api.post(
        "/v1/reserve",
        response_model=LeaseResponse,
        responses=_responses(401, 413, 422, 503, _409=_CONFLICT, _429=_REFUSED),
        openapi_extra=body_of(ReserveRequest),
        tags=["leases"],
    )
    async def reserve(request: Request) -> Response:
        """Admit ``amount`` and hold it until settled, released or expired."""
        req = await read_body(request, ReserveRequest)
        lease = await admit(
            "reserve",
            budget.reserve(
                req.user_id,
                req.amount,
                project_id=req.project_id,
                ttl_seconds=req.ttl_seconds,
                idempotency_key=req.idempotency_key,
            ),
        )
        return SafeJSONResponse(
            {
                "lease_id": lease.id,
                "expires_at": lease.expires_at.isoformat(),
                "amount": str(lease.amount),
                "user_id": lease.user_id,
                "project_id": lease.project_id,
                "replayed": lease.replayed,
            }
        )

    @api.post(
        "/v1/settle",
        response_model=SettleResponse,
        responses=_responses(401, 413, 422, 503, _409=_LEASE_CONFLICT),
        openapi_extra=body_of(SettleRequest),
        tags=["leases"],
    )
    async def settle(request: Request) -> Response:
        """Charge a lease's actual cost (a fact; ``late`` after expiry).
        Settling again at the same cost replays the first record."""
        req = await read_body(request, SettleRequest)
        rec = await record(
            "settle",
            budget.settle(
                req.lease_id, req.actual_cost, model=req.model, metadata=req.metadata
            ),
        )
        return SafeJSONResponse(
            {
                "status": "settled",
                "entry_id": rec.entry_id,
                "lease_id": rec.lease_id,
                "replayed": rec.replayed,
                "spooled": rec.spooled,
                "late": rec.late,
                "amount": str(rec.amount),
                "estimate": _money(rec.estimate),
                "user_id": rec.user_id,
                "project_id": rec.project_id,
                "model": rec.model,
                "occurred_at": rec.occurred_at.isoformat(),
            }
        )

    @api.post(
        "/v1/release",
        response_model=ReleaseResponse,
        responses=_responses(401, 413, 422, 503, _409=_LEASE_CONFLICT),
        openapi_extra=body_of(ReleaseRequest),
        tags=["leases"],
    )
    async def release(request: Request) -> Response:
        """Void a lease: its hold stops counting, nothing is charged.
        409 when it was settled or is unknown."""
        req = await read_body(request, ReleaseRequest)
        released = await budget.release(req.lease_id)
        return SafeJSONResponse(
            {"status": "released", "lease_id": req.lease_id, "released": released}
        )

    @api.get(
        "/v1/usage/{user_id:path}",
        response_model=UsageResponse,
        responses=_responses(401, 422, 503),
        tags=["operators"],
    )
    async def usage(user_id: UserIdPath, project_id: ProjectQuery = None) -> Response:
        """Spent, held, caps, what remains and the balance, per scope."""
        scopes = await budget.get_usage(user_id, project_id)
        return SafeJSONResponse(
            {
                "user_id": user_id,
                "project_id": project_id,
                "unit": budget.config.unit,
                "scopes": {name: _scope_body(s) for name, s in scopes.items()},
            }
        )

    @api.post(
        "/v1/credits",
        response_model=CreditsResponse,
        responses=_responses(401, 413, 422, 503, _409=_CONFLICT),
        openapi_extra=body_of(CreditsRequest),
        tags=["operators"],
    )
    async def credits(request: Request) -> Response:
        """Add prepaid credits to a user's balance (rounded down to the micro-unit)."""
        req = await read_body(request, CreditsRequest)
        rec = await record(
            "credits",
            budget.add_credits(
                req.user_id,
                req.amount,
                idempotency_key=req.idempotency_key,
                metadata=req.metadata,
            ),
        )
        return SafeJSONResponse(
            {
                "status": "credited",
                "entry_id": rec.entry_id,
                "replayed": rec.replayed,
                "spooled": rec.spooled,
                "user_id": rec.user_id,
                "amount": str(rec.amount),
                "balance": _money(rec.balance),
                "occurred_at": rec.occurred_at.isoformat(),
            }
        )

    @api.get(
        "/v1/limits/{scope}/{scope_id:path}",
        response_model=LimitsResponse,
        responses=_responses(401, 422, 503),
        tags=["operators"],
    )
    async def get_limits(scope: ScopePath, scope_id: ScopeIdPath) -> Response:
        """The caps in force for one entity, and which are per-entity overrides."""
        limits = await budget.set_limits(scope, scope_id)  # no change: a read
        return SafeJSONResponse(_limits_body(limits))

    @api.put(
        "/v1/limits/{scope}/{scope_id:path}",
        response_model=LimitsResponse,
        responses=_responses(401, 413, 422, 503),
        openapi_extra=body_of(LimitsRequest),
        tags=["operators"],
    )
    async def put_limits(
        scope: ScopePath, scope_id: ScopeIdPath, request: Request
    ) -> Response:
        """Override an entity's caps, effective on the next call: a field left
        out keeps its value, ``null`` removes the cap."""
        req = await read_body(request, LimitsRequest)
        given = req.model_fields_set
        limits = await budget.set_limits(
            scope,
            scope_id,
            daily=req.daily if "daily" in given else UNSET,
            monthly=req.monthly if "monthly" in given else UNSET,
        )
        return SafeJSONResponse(_limits_body(limits))

    @api.delete(
        "/v1/limits/{scope}/{scope_id:path}",
        response_model=LimitsResponse,
        responses=_responses(401, 422, 503),
        tags=["operators"],
    )
    async def delete_limits(scope: ScopePath, scope_id: ScopeIdPath) -> Response:
        """Drop an entity's overrides: it follows the configured defaults again."""
        limits = await budget.clear_limits(scope, scope_id)
        return SafeJSONResponse(_limits_body(limits))

    @api.get(
        "/metrics",
        response_class=Response,
        responses={
            200: {
                "content": {"text/plain": {}},
                "description": "Prometheus text format",
            },
            401: _ERRORS[401],
        },
        tags=["service"],
    )
    async def prometheus() -> Response:
        """Prometheus metrics: decisions, facts, latency, Redis errors, backlogs."""
        return Response(await metrics.render(budget), media_type=CONTENT_TYPE_LATEST)

    @api.get("/openapi.json", include_in_schema=False)
    async def openapi_document() -> Response:
        return SafeJSONResponse(app.openapi())

    app.include_router(api)
    # Registered last so the typed handlers above win (Starlette picks the
    # closest class in the exception's MRO): an unexpected bug answers 500 JSON.
    app.add_exception_handler(Exception, on_other)
    return app


def _version() -> str:
    from spendgate import __version__

    return __version__


def create_app_from_env() -> FastAPI:
    """The app ``spendgate serve`` runs (a uvicorn factory): config from the
    ``SPENDGATE_*`` environment, no auth only when ``--insecure-no-auth``
    set :data:`INSECURE_ENV`."""
    return create_app(None, insecure_no_auth=os.environ.get(INSECURE_ENV) == "1")
