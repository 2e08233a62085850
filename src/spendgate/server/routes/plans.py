"""Plans and features: ``/v1/plans`` (read, ``PUT`` one), a user's plan
(``GET``, ``PUT`` assigns, ``DELETE`` takes it away) and a user's feature
(``GET`` checks it, ``POST .../use`` counts one call: 429 with
``Retry-After`` at a ``deny`` limit, 403 when the plan lacks the feature).

Plan ids and features are opaque strings, as user ids are: their path
parameters take a ``/`` too (``/v1/plans/acme/pro``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from spendgate.server.body import read_body
from spendgate.server.deps import budget_of
from spendgate.server.errors import RequestProblem
from spendgate.server.fields import ID_PATTERN, UserIdPath, usable_id
from spendgate.server.plan_schemas import (
    AssignRequest,
    FeatureResponse,
    PlanBody,
    PlanRequest,
    PlansResponse,
    UnassignResponse,
    UseFeatureRequest,
    UserPlanResponse,
)
from spendgate.server.responses import CONFLICT, request_body, responses
from spendgate.server.schemas import Problem, Refusal

router = APIRouter()

_ID_SCHEMA = {"pattern": ID_PATTERN}
PlanPath = Annotated[
    str,
    Path(min_length=1, description="the plan id", json_schema_extra=_ID_SCHEMA),
]
FeaturePath = Annotated[
    str,
    Path(min_length=1, description="the feature", json_schema_extra=_ID_SCHEMA),
]
_NO_PLAN = {"model": Problem, "description": "no such plan"}
_LIMITED = {
    "model": Refusal,
    "description": "refused: the feature's max_calls were used this period "
    "(action deny); window is the limit's period, limit and spent are calls",
}
_NOT_ENTITLED = {
    "model": Problem,
    "description": "the user's plan does not have the feature (or no plan)",
}


def _checked(value: str) -> str:
    try:
        return usable_id(value)
    except ValueError as exc:
        raise RequestProblem(422, str(exc)) from None


@router.get(
    "/v1/plans",
    response_model=PlansResponse,
    responses=responses(401, 503),
    tags=["plans"],
)
async def list_plans(request: Request) -> PlansResponse:
    """Every plan in force: set with ``PUT`` (``source: set_plan``, over a
    book's plan of the same id) and the active price book's."""
    plans = await budget_of(request).list_plans()
    return PlansResponse(plans=[PlanBody.of(p) for p in plans])


@router.get(
    "/v1/plans/{plan_id:path}",
    response_model=PlanBody,
    responses={**responses(401, 422, 503), 404: _NO_PLAN},
    tags=["plans"],
)
async def get_plan(plan_id: PlanPath, request: Request) -> PlanBody:
    """One plan in force."""
    plan = await budget_of(request).get_plan(_checked(plan_id))
    if plan is None:
        raise RequestProblem(404, f"no plan {plan_id!r}")
    return PlanBody.of(plan)


@router.put(
    "/v1/plans/{plan_id:path}",
    response_model=PlanBody,
    responses=responses(401, 408, 413, 422, 503),
    openapi_extra=request_body(PlanRequest),
    tags=["plans"],
)
async def put_plan(plan_id: PlanPath, request: Request) -> PlanBody:
    """Define or redefine a plan, checked by bursar's rules (422 otherwise)."""
    req = await read_body(request, PlanRequest)
    limits = None
    if req.feature_limits is not None:
        limits = {f: body.model_dump() for f, body in req.feature_limits.items()}
    plan = await budget_of(request).set_plan(
        _checked(plan_id),
        name=req.name,
        free_allowance=req.free_allowance,
        period=req.period,
        rate_overrides=req.rate_overrides,
        features=req.features,
        feature_limits=limits,
    )
    return PlanBody.of(plan)


@router.get(
    "/v1/users/{user_id:path}/plan",
    response_model=UserPlanResponse,
    responses=responses(401, 404, 422, 503),
    tags=["plans"],
)
async def get_user_plan(user_id: UserIdPath, request: Request) -> UserPlanResponse:
    """The user's plan and its cycle now: the allowance left in this period
    and when it renews (every field null when the user has no plan)."""
    return UserPlanResponse.of(user_id, await budget_of(request).get_user_plan(user_id))


@router.put(
    "/v1/users/{user_id:path}/plan",
    response_model=UserPlanResponse,
    responses=responses(401, 404, 408, 413, 422, 503),
    openapi_extra=request_body(AssignRequest),
    tags=["plans"],
)
async def assign_plan(user_id: UserIdPath, request: Request) -> UserPlanResponse:
    """Put the user on a plan: its cycle starts now (422 for a plan not in
    force)."""
    req = await read_body(request, AssignRequest)
    up = await budget_of(request).assign_plan(user_id, req.plan_id)
    return UserPlanResponse.of(user_id, up)


@router.delete(
    "/v1/users/{user_id:path}/plan",
    response_model=UnassignResponse,
    responses=responses(401, 404, 422, 503),
    tags=["plans"],
)
async def unassign_plan(user_id: UserIdPath, request: Request) -> UnassignResponse:
    """Take the user's plan away."""
    removed = await budget_of(request).unassign_plan(user_id)
    return UnassignResponse(user_id=user_id, removed=removed)


@router.get(
    "/v1/users/{user_id:path}/features/{feature:path}",
    response_model=FeatureResponse,
    responses=responses(401, 404, 422, 503),
    tags=["plans"],
)
async def check_feature(
    user_id: UserIdPath, feature: FeaturePath, request: Request
) -> FeatureResponse:
    """Whether the user's plan has the feature (bursar's truthy rule), its
    value, and for a limited feature the calls left this period."""
    check = await budget_of(request).check_feature(user_id, _checked(feature))
    return FeatureResponse.of(check)


@router.post(
    "/v1/users/{user_id:path}/features/{feature:path}/use",
    response_model=FeatureResponse,
    responses={
        **responses(401, 404, 408, 413, 422, 503, _409=CONFLICT),
        403: _NOT_ENTITLED,
        429: _LIMITED,
    },
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {
                "application/json": {"schema": UseFeatureRequest.model_json_schema()}
            },
        }
    },
    tags=["plans"],
)
async def use_feature(
    user_id: UserIdPath, feature: FeaturePath, request: Request
) -> FeatureResponse:
    """Count one call of the feature, atomically: 429 with ``Retry-After``
    at ``max_calls`` with action ``deny`` (nothing counted)."""
    req = await read_body(request, UseFeatureRequest, empty_ok=True)
    check = await budget_of(request).use_feature(
        user_id, _checked(feature), idempotency_key=req.idempotency_key
    )
    return FeatureResponse.of(check)
