"""The teams' errors: a charge by a user who is not a member, a team that is
not there, a team made twice."""

from __future__ import annotations

from spendgate.errors.base import SpendgateError


class NotATeamMemberError(SpendgateError):
    """A charge on a team's pool by a user who is not one of its members (or
    the removal of one). Nothing changed."""

    def __init__(self, team_id: str, user_id: str) -> None:
        self.team_id = team_id
        self.user_id = user_id
        super().__init__(f"user {user_id!r} is not a member of team {team_id!r}")


class TeamNotFoundError(SpendgateError, LookupError):
    """No team of that id (``create_team`` makes one). Nothing changed."""

    def __init__(self, team_id: str) -> None:
        self.team_id = team_id
        super().__init__(f"no team {team_id!r}")


class TeamExistsError(SpendgateError):
    """``create_team``: a team of that id exists already (it was left as it
    is: its pool is topped up with ``credit_team``)."""

    def __init__(self, team_id: str) -> None:
        self.team_id = team_id
        super().__init__(f"team {team_id!r} exists already")
