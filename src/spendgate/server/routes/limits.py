"""``/v1/limits/{scope}/{scope_id}``: read, override (``PUT``) and drop
(``DELETE``) the caps of one user, project or the global scope."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request

from spendgate.errors import InvalidArgumentError
from spendgate.manager import UNSET
from spendgate.server.body import read_body
from spendgate.server.deps import budget_of
from spendgate.server.fields import ModelQuery, ScopeIdPath
from spendgate.server.limit_schemas import LimitsRequest, LimitsResponse
from spendgate.server.responses import request_body, responses

router = APIRouter()

ScopePath = Annotated[
    Literal["user", "project", "global"], Path(description="the scope")
]


@router.get(
    "/v1/limits/{scope}/{scope_id:path}",
    response_model=LimitsResponse,
    responses=responses(401, 404, 422, 503),
    tags=["operators"],
)
async def get_limits(
    scope: ScopePath, scope_id: ScopeIdPath, request: Request, model: ModelQuery = None
) -> LimitsResponse:
    """The caps in force for one entity, and which are per-entity overrides;
    with ``?model=``, that model's caps in the scope."""
    limits = await budget_of(request).set_limits(scope, scope_id, model=model)  # a read
    return LimitsResponse.of(limits)


@router.put(
    "/v1/limits/{scope}/{scope_id:path}",
    response_model=LimitsResponse,
    responses=responses(401, 404, 408, 413, 422, 503),
    openapi_extra=request_body(LimitsRequest),
    tags=["operators"],
)
async def put_limits(
    scope: ScopePath, scope_id: ScopeIdPath, request: Request, model: ModelQuery = None
) -> LimitsResponse:
    """Override an entity's caps, effective on the next call: a field left
    out keeps its value, ``null`` removes the cap. ``weekly`` and
    ``per_minute`` are refused (422) where the deployment does not count
    those windows; ``action`` and ``thresholds`` where cap actions are off.
    With ``?model=`` (or ``model`` in the body): that model's daily and
    monthly caps in the scope (needs ``model_caps``; no action)"""
    req = await read_body(request, LimitsRequest)
    given = req.model_fields_set
    changes: dict[str, Any] = {
        window: getattr(req, window) if window in given else UNSET
        for window in ("daily", "monthly", "weekly", "per_minute")
    }
    if req.model is not None and model is not None and req.model != model:
        raise InvalidArgumentError("the body's model and ?model= differ")
    model = model if model is not None else req.model
    limits = await budget_of(request).set_limits(
        scope,
        scope_id,
        model=model,
        action=req.action if "action" in given else UNSET,
        thresholds=req.thresholds,
        **changes,
    )
    return LimitsResponse.of(limits)


@router.delete(
    "/v1/limits/{scope}/{scope_id:path}",
    response_model=LimitsResponse,
    responses=responses(401, 404, 422, 503),
    tags=["operators"],
)
async def delete_limits(
    scope: ScopePath, scope_id: ScopeIdPath, request: Request, model: ModelQuery = None
) -> LimitsResponse:
    """Drop an entity's overrides: it follows the configured defaults again.
    With ``?model=``: drop that model's caps in the scope."""
    limits = await budget_of(request).clear_limits(scope, scope_id, model=model)
    return LimitsResponse.of(limits)
