"""The teams' request and response models (``/v1/teams``), as strict as the
others (:mod:`spendgate.server.schemas`): no coercion, no unknown fields,
amounts as exact decimal strings."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints

from spendgate.models import SpendRecord
from spendgate.server.fields import Amount, Id, Metadata, TeamId
from spendgate.teams import Team, TeamMember

_STRICT = ConfigDict(extra="forbid", strict=True)

#: a member's role: free text without "|"
Role = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^|]+$")
]


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


class TeamCreateRequest(BaseModel):
    """``POST /v1/teams``: a new team with its shared pool at
    ``initial_balance``."""

    model_config = _STRICT
    #: no "/": the team's paths could not name it
    team_id: TeamId
    name: str | None = None
    initial_balance: Amount = Decimal(0)


class MemberRequest(BaseModel):
    """``PUT /v1/teams/{team_id}/members/{user_id}``: add a member, or change
    a member's role and caps on the pool (``null``: no cap)."""

    model_config = _STRICT
    role: Role = "member"
    daily_cap: Amount | None = None
    monthly_cap: Amount | None = None


class TeamCreditRequest(BaseModel):
    """``POST /v1/teams/{team_id}/credits``: add credits to the pool."""

    model_config = _STRICT
    amount: Amount
    idempotency_key: Id | None = None
    metadata: Metadata | None = None


class MemberBody(BaseModel):
    user_id: str
    role: str
    daily_cap: str | None
    monthly_cap: str | None
    spent_today: str
    spent_this_month: str
    held: str

    @classmethod
    def of(cls, member: TeamMember) -> MemberBody:
        return cls(
            user_id=member.user_id,
            role=member.role,
            daily_cap=_money(member.daily_cap),
            monthly_cap=_money(member.monthly_cap),
            spent_today=str(member.spent_today),
            spent_this_month=str(member.spent_this_month),
            held=str(member.held),
        )


class TeamResponse(BaseModel):
    team_id: str
    name: str | None
    created_at: str
    unit: str
    balance: str
    held: str
    available: str
    members: list[MemberBody]

    @classmethod
    def of(cls, team: Team, unit: str) -> TeamResponse:
        return cls(
            team_id=team.team_id,
            name=team.name,
            created_at=team.created_at.isoformat(),
            unit=unit,
            balance=str(team.balance),
            held=str(team.held),
            available=str(team.available),
            members=[MemberBody.of(m) for _, m in sorted(team.members.items())],
        )


class MemberResponse(BaseModel):
    status: Literal["added", "updated", "removed"]
    team_id: str
    user_id: str


class TeamCreditResponse(BaseModel):
    status: Literal["credited"]
    entry_id: str
    replayed: bool
    spooled: bool
    team_id: str
    amount: str
    balance: str | None
    occurred_at: str

    @classmethod
    def of(cls, record: SpendRecord, team_id: str) -> TeamCreditResponse:
        return cls(
            status="credited",
            entry_id=record.entry_id,
            replayed=record.replayed,
            spooled=record.spooled,
            team_id=team_id,
            amount=str(record.amount),
            balance=_money(record.balance),
            occurred_at=record.occurred_at.isoformat(),
        )
