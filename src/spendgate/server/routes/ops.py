"""For operators' tools: ``GET /metrics`` (Prometheus) and
``GET /openapi.json`` (the document, behind the API key like the rest)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from spendgate.server.deps import budget_of, metrics_of
from spendgate.server.metrics import CONTENT_TYPE_LATEST
from spendgate.server.responses import ERRORS, SafeJSONResponse

router = APIRouter()


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text format"},
        401: ERRORS[401],
    },
    tags=["service"],
)
async def prometheus(request: Request) -> Response:
    """Prometheus metrics: decisions, facts, latency, Redis errors, backlogs."""
    text = await metrics_of(request).render(budget_of(request))
    return Response(text, media_type=CONTENT_TYPE_LATEST)


@router.get("/openapi.json", include_in_schema=False)
async def openapi_document(request: Request) -> Response:
    return SafeJSONResponse(request.app.openapi())
