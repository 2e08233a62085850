"""The app factory: :func:`create_app` puts one budget, its metrics, the API
keys and the clock on ``app.state`` and includes the routers of
:mod:`spendgate.server.routes`; :func:`create_app_from_env` is what ``spendgate
serve`` runs. The service itself is described in :mod:`spendgate.server`.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from fastapi import Depends, FastAPI
from loguru import logger

from spendgate import __version__
from spendgate.config import BudgetConfig, load_config
from spendgate.errors import BALANCE_RETRY_AFTER_SECONDS
from spendgate.manager import BudgetManager
from spendgate.server.auth import INSECURE_ENV, ApiKeys, authenticate
from spendgate.server.body import BODY_TIMEOUT_SECONDS, DEFAULT_MAX_BODY_BYTES
from spendgate.server.deps import Clock
from spendgate.server.errors import install_handlers
from spendgate.server.metrics import LatencyMiddleware, ServerMetrics
from spendgate.server.responses import SafeJSONResponse
from spendgate.server.routes import AUTHENTICATED, PUBLIC
from spendgate.server.url import Utf8UrlMiddleware, known_inputs

__all__ = [
    "BALANCE_RETRY_AFTER_SECONDS",
    "DEFAULT_MAX_BODY_BYTES",
    "INSECURE_ENV",
    "create_app",
    "create_app_from_env",
    "lifespan",
]


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the budget on start-up; close it on shutdown if the app made it."""
    budget: BudgetManager = app.state.budget
    await budget.open()
    if budget.embedded:
        logger.warning(
            "spendgate server: running on the embedded in-process store; budgets "
            "are lost on exit and not shared between workers. Set "
            "SPENDGATE_REDIS_URL for production."
        )
    yield
    if app.state.owns_budget:
        await budget.aclose()


def create_app(
    source: BudgetConfig | BudgetManager | None = None,
    *,
    api_keys: Sequence[str] | None = None,
    insecure_no_auth: bool = False,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    body_timeout_seconds: float = BODY_TIMEOUT_SECONDS,
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
    :param body_timeout_seconds: a body not received in full within this is
        answered with 408 and the connection closed
    :param clock: the clock ``Retry-After`` is counted from; defaults to the
        system clock (tests pass the budget's clock)
    :raise ConfigurationError: no API key is configured and
        ``insecure_no_auth`` is not set
    """
    if isinstance(source, BudgetManager):
        budget, owned = source, False
    else:
        config = source if source is not None else load_config()
        budget, owned = BudgetManager(config), True
    keys = api_keys if api_keys is not None else budget.config.api_key_list()
    accepted = ApiKeys(keys, insecure_no_auth=insecure_no_auth)
    app = _bare_app()
    app.state.api_keys = accepted
    app.state.budget = budget
    app.state.owns_budget = owned
    app.state.metrics = ServerMetrics()
    app.state.clock = clock or (lambda: datetime.now(UTC))
    app.state.max_body_bytes = max_body_bytes
    app.state.body_timeout_seconds = body_timeout_seconds
    # (added first, so inside the latency middleware: its 422s are timed too)
    app.add_middleware(Utf8UrlMiddleware)
    app.add_middleware(LatencyMiddleware, metrics=app.state.metrics)
    install_handlers(app)
    for router in PUBLIC:
        app.include_router(router)
    for router in AUTHENTICATED:
        app.include_router(
            router, dependencies=[Depends(authenticate), Depends(known_inputs)]
        )
    return app


def _bare_app() -> FastAPI:
    """The FastAPI object: the document's title, the lifespan, JSON answers."""
    return FastAPI(
        title="spendgate",
        summary="Budget guard for LLM calls: admission, leases, facts, usage, limits.",
        description=(
            "Amounts are exact: send JSON numbers or decimal strings; answers "
            "carry amounts as strings. Every endpoint but /health needs "
            "`Authorization: Bearer <key>`."
        ),
        version=__version__,
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,
        # The OpenAPI document is served by routes.ops, behind the API key like
        # everything but /health; the browsable docs could not send the key.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )


def create_app_from_env() -> FastAPI:
    """The app ``spendgate serve`` runs (a uvicorn factory): config from the
    ``SPENDGATE_*`` environment, no auth only when ``--insecure-no-auth``
    set :data:`INSECURE_ENV`."""
    return create_app(None, insecure_no_auth=os.environ.get(INSECURE_ENV) == "1")
