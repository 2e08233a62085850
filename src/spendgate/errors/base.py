"""The root of every spendgate error, and the scopes and windows a refusal names."""

from __future__ import annotations

from typing import Literal

Scope = Literal["user", "project", "global"]
#: the scope a refusal names: a charge on a team's pool may also be refused
#: by the team's pool (``"team"``) or the member's caps on it
#: (``"team_member"``, its ``scope_id`` the user)
RefusalScope = Literal["user", "project", "global", "team", "team_member"]
Window = Literal["daily", "monthly", "balance", "weekly", "minute"]

#: ``Retry-After`` of a refusal with no window to wait for: a balance can be
#: topped up at any moment
BALANCE_RETRY_AFTER_SECONDS = 60


class SpendgateError(Exception):
    """Root of every error spendgate raises on purpose."""
