"""Teams: ``POST /v1/teams`` makes one, ``GET /v1/teams/{team_id}`` reads it
(its pool and members), ``PUT``/``DELETE /v1/teams/{team_id}/members/{user_id}``
add, update or remove a member, ``POST /v1/teams/{team_id}/credits`` tops
its pool up (a fact: spooled while Redis is down). Charging a team is
``team_id`` in the ``/spend``, ``/v1/reserve``, ``/v1/reserve_up_to`` and
``/v1/deduct`` bodies. Team ids in a path cannot hold ``/``, so a new
team's cannot either."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from pydantic import AfterValidator

from spendgate.server.body import read_body
from spendgate.server.deps import budget_of, metrics_of
from spendgate.server.fields import ID_PATTERN, UserIdPath, usable_id
from spendgate.server.responses import CONFLICT, request_body, responses
from spendgate.server.schemas import Problem
from spendgate.server.team_schemas import (
    MemberRequest,
    MemberResponse,
    TeamCreateRequest,
    TeamCreditRequest,
    TeamCreditResponse,
    TeamResponse,
)

router = APIRouter()

TeamIdPath = Annotated[
    str,
    Path(
        min_length=1,
        description="the team id",
        json_schema_extra={"pattern": ID_PATTERN},
    ),
    AfterValidator(usable_id),
]
_NO_TEAM = {"model": Problem, "description": "no such team"}
_EXISTS = {"model": Problem, "description": "a team of that id exists"}
_NOT_MEMBER = {"model": Problem, "description": "the user is not a member"}


@router.post(
    "/v1/teams",
    status_code=201,
    response_model=TeamResponse,
    responses={**responses(401, 408, 413, 422, 503), 409: _EXISTS},
    openapi_extra=request_body(TeamCreateRequest),
    tags=["teams"],
)
async def create(request: Request) -> TeamResponse:
    """Make a team, its shared pool at ``initial_balance``; 409 when it exists."""
    req = await read_body(request, TeamCreateRequest)
    budget = budget_of(request)
    team = await budget.create_team(req.team_id, req.name, req.initial_balance)
    return TeamResponse.of(team, budget.config.unit)


@router.get(
    "/v1/teams/{team_id}",
    response_model=TeamResponse,
    responses={**responses(401, 422, 503), 404: _NO_TEAM},
    tags=["teams"],
)
async def show(request: Request, team_id: TeamIdPath) -> TeamResponse:
    """The pool's balance, what holds keep of it, and each member's role,
    caps and spending on it today and this month."""
    budget = budget_of(request)
    team = await budget.get_team(team_id)
    return TeamResponse.of(team, budget.config.unit)


@router.put(
    "/v1/teams/{team_id}/members/{user_id:path}",
    response_model=MemberResponse,
    responses={**responses(401, 408, 413, 422, 503), 404: _NO_TEAM},
    openapi_extra=request_body(MemberRequest),
    tags=["teams"],
)
async def put_member(
    request: Request, team_id: TeamIdPath, user_id: UserIdPath
) -> MemberResponse:
    """Add a member, or change a member's role and caps (next charge on)."""
    req = await read_body(request, MemberRequest)
    added = await budget_of(request).add_team_member(
        team_id, user_id, req.role, req.daily_cap, req.monthly_cap
    )
    return MemberResponse(
        status="added" if added else "updated", team_id=team_id, user_id=user_id
    )


@router.delete(
    "/v1/teams/{team_id}/members/{user_id:path}",
    response_model=MemberResponse,
    responses={**responses(401, 422, 503), 403: _NOT_MEMBER, 404: _NO_TEAM},
    tags=["teams"],
)
async def delete_member(
    request: Request, team_id: TeamIdPath, user_id: UserIdPath
) -> MemberResponse:
    """Remove a member: their next charge on the pool is refused."""
    await budget_of(request).remove_team_member(team_id, user_id)
    return MemberResponse(status="removed", team_id=team_id, user_id=user_id)


@router.post(
    "/v1/teams/{team_id}/credits",
    response_model=TeamCreditResponse,
    responses={**responses(401, 408, 413, 422, 503, _409=CONFLICT), 404: _NO_TEAM},
    openapi_extra=request_body(TeamCreditRequest),
    tags=["teams"],
)
async def credit(request: Request, team_id: TeamIdPath) -> TeamCreditResponse:
    """Add credits to the team's pool (rounded down to the micro-unit)."""
    req = await read_body(request, TeamCreditRequest)
    record = await metrics_of(request).record(
        "team_credits",
        budget_of(request).credit_team(
            team_id, req.amount, req.idempotency_key, req.metadata
        ),
    )
    return TeamCreditResponse.of(record, team_id)
