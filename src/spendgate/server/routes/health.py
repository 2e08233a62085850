"""``GET /health``: liveness and Redis reachability, without an API key."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from loguru import logger

from spendgate.server.deps import budget_of, metrics_of
from spendgate.server.responses import SafeJSONResponse
from spendgate.server.schemas import HealthResponse

router = APIRouter()


@router.get(
    "/health",
    response_model=HealthResponse,
    responses={503: {"model": HealthResponse, "description": "Redis is not answering"}},
    tags=["service"],
)
async def health(request: Request) -> HealthResponse | Response:
    """Liveness and Redis reachability; needs no API key."""
    try:
        await budget_of(request).redis.ping()
    except Exception as exc:  # any failure to answer means "not healthy"
        metrics_of(request).redis_errors.labels("unavailable").inc()
        logger.warning("spendgate server: health check failed: {}", exc)
        body = HealthResponse(status="unhealthy", redis="disconnected")
        return SafeJSONResponse(body.model_dump(), status_code=503)
    return HealthResponse(status="healthy", redis="connected")
