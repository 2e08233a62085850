"""``GET /health``: liveness and Redis reachability, without an API key.

When Redis does not answer: 503 with ``{"status": "unhealthy", "redis":
"disconnected", "detail": "Redis connection failed"}``, the ``detail`` that
coreason-budget's server answers (its callers and tests match on it). Why it
failed is logged, not answered: the route needs no key.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from loguru import logger

from spendgate.server.deps import budget_of, metrics_of
from spendgate.server.responses import SafeJSONResponse
from spendgate.server.schemas import HealthResponse, Unhealthy

router = APIRouter()

#: the ``detail`` of a 503, as coreason-budget's server words it
REDIS_DOWN_DETAIL = "Redis connection failed"


@router.get(
    "/health",
    response_model=HealthResponse,
    responses={503: {"model": Unhealthy, "description": "Redis is not answering"}},
    tags=["service"],
)
async def health(request: Request) -> HealthResponse | Response:
    """Liveness and Redis reachability; needs no API key."""
    try:
        await budget_of(request).redis.ping()
    except Exception as exc:  # any failure to answer means "not healthy"
        metrics_of(request).redis_errors.labels("unavailable").inc()
        logger.warning("spendgate server: health check failed: {}", exc)
        body = Unhealthy(
            status="unhealthy", redis="disconnected", detail=REDIS_DOWN_DETAIL
        )
        return SafeJSONResponse(body.model_dump(), status_code=503)
    return HealthResponse(status="healthy", redis="connected")
