"""``GET /v1/usage/{user_id}``: what a user (and a project) spent, hold and
may still spend, per scope."""

from __future__ import annotations

from fastapi import APIRouter, Request

from spendgate.server.deps import budget_of
from spendgate.server.fields import ModelQuery, ProjectQuery, UserIdPath
from spendgate.server.responses import responses
from spendgate.server.schemas import ScopeBody, UsageResponse

router = APIRouter()


@router.get(
    "/v1/usage/{user_id:path}",
    response_model=UsageResponse,
    responses=responses(401, 404, 422, 503),
    tags=["operators"],
)
async def usage(
    request: Request,
    user_id: UserIdPath,
    project_id: ProjectQuery = None,
    model: ModelQuery = None,
) -> UsageResponse:
    """Spent, held, caps, what remains and the balance, per scope; with
    ``?model=``, that model's spend and per-model caps in each scope too
    (422 unless the deployment has ``model_caps``)."""
    budget = budget_of(request)
    scopes = await budget.get_usage(user_id, project_id, model=model)
    return UsageResponse(
        user_id=user_id,
        project_id=project_id,
        unit=budget.config.unit,
        scopes={name: ScopeBody.of(s) for name, s in scopes.items()},
    )
