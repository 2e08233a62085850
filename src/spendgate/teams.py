"""Teams' records: what :meth:`BudgetManager.get_team` answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

__all__ = ["TEAM_LEASE_MARK", "Team", "TeamMember", "team_of_lease"]

#: what separates a team lease's id from its team: ``"<id>.<team id>"``
#: (a lease of the user's own is 28 hex digits), so settling or releasing
#: by id alone finds the team's keys
TEAM_LEASE_MARK = "."
#: the length of the id part of a lease id (see ``spendgate.ops.base.new_id``)
LEASE_ID_LENGTH = 28


def team_of_lease(lease_id: str) -> str | None:
    """The team of a team lease's id, ``None`` for a lease of the user's own."""
    if lease_id[LEASE_ID_LENGTH : LEASE_ID_LENGTH + 1] != TEAM_LEASE_MARK:
        return None
    return lease_id[LEASE_ID_LENGTH + 1 :] or None


@dataclass(frozen=True, slots=True)
class TeamMember:
    """One member of a team, with what they spent on its pool."""

    user_id: str
    #: ``"member"``, ``"admin"``... (free text, the caller's)
    role: str
    #: the member's cap on the pool per day; ``None``: none
    daily_cap: Decimal | None
    #: the member's cap on the pool per month; ``None``: none
    monthly_cap: Decimal | None
    #: spent on the team's pool today (the window time zone's day)
    spent_today: Decimal
    #: spent on it this month
    spent_this_month: Decimal
    #: held by the member's pending holds on the pool
    held: Decimal


@dataclass(frozen=True, slots=True)
class Team:
    """A team: its shared pool and its members."""

    team_id: str
    name: str | None
    created_at: datetime
    #: the pool's balance (a fact above it may take it below 0)
    balance: Decimal
    #: held by the members' pending holds
    held: Decimal
    #: user id -> member
    members: dict[str, TeamMember] = field(default_factory=dict)

    @property
    def available(self) -> Decimal:
        """What a new charge may still take: ``balance - held``."""
        return self.balance - self.held
