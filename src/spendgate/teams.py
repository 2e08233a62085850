"""Teams' records: what :meth:`BudgetManager.get_team` answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

__all__ = ["TEAM_LEASE_MARK", "Team", "TeamMember", "team_of_charge", "team_of_lease"]

#: what separates a team lease's id, or a team charge's entry id, from its
#: team: ``"<id>.<team id>"`` (a lease or a charge of the user's own is 28
#: hex digits), so settling or releasing a lease, or refunding a charge, by
#: id alone finds the team's keys
TEAM_LEASE_MARK = "."
#: the length of the id part of a lease or entry id (see
#: ``spendgate.ops.base.new_id``: 12 hex digits of ms, 16 random)
LEASE_ID_LENGTH = 28
_HEX = frozenset("0123456789abcdef")
#: the last millisecond of year 9999: a later time has no calendar day
_LAST_MS = 253_402_300_799_999


def team_of_lease(lease_id: str) -> str | None:
    """The team of a team lease's id, ``None`` for a lease of the user's own."""
    if lease_id[LEASE_ID_LENGTH : LEASE_ID_LENGTH + 1] != TEAM_LEASE_MARK:
        return None
    return lease_id[LEASE_ID_LENGTH + 1 :] or None


def team_of_charge(entry_id: str) -> tuple[str, int] | None:
    """The team of a team charge's entry id and the charge's time (ms, its
    first 12 hex digits), ``None`` for any other id. Only a team charge's
    script writes a refund record under such an id, so an id made up to
    look like one finds no charge."""
    team = team_of_lease(entry_id)
    head = entry_id[:LEASE_ID_LENGTH]
    if team is None or not _HEX.issuperset(head):
        return None
    charged_ms = int(head[:12], 16)
    if charged_ms > _LAST_MS:  # (no charge was made after year 9999)
        return None
    return team, charged_ms


def split_entry(payload: str, team: str | None) -> tuple[str, str]:
    """A script's reply payload that starts with an entry id: the id, and
    the rest after its ``"|"``. A team charge's id (``"<id>.<team id>"``,
    ``team`` given) is cut by its length: a team id may hold ``"|"``."""
    if team is None:
        entry, _, rest = payload.partition("|")
        return entry, rest
    end = LEASE_ID_LENGTH + 1 + len(team)
    return payload[:end], payload[end + 1 :]


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
