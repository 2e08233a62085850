"""Analytics of teams: net spend on each team's pool, and by its members.

A charge on a team's pool (``team_id=``) names the team and the user on its
ledger row; these queries count those rows (kinds ``spend`` and
``settle``), each net of its refunds (a refund counts on its charge's row,
as :mod:`spendgate.ledger.netspend` counts it), over a window on
``occurred_at`` (``since`` inclusive, ``until`` exclusive). Credits to a
pool (``grant`` rows naming a team) are not spending. The index of
migration 0005, ``(team_id, user_id, occurred_at)``, serves both.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from spendgate.core.money import from_micros
from spendgate.core.protocol import SPEND_KINDS, LedgerKind
from spendgate.errors import InvalidArgumentError
from spendgate.errors.arguments import shown
from spendgate.ledger.analytics_rows import SpendGroup

__all__ = ["TeamAnalytics", "TeamMemberSpend", "row_limit"]

# The largest LIMIT Postgres takes (a bigint); a larger one asks for all.
_MAX_LIMIT = 2**63 - 1


def row_limit(limit: object) -> int | None:
    """A query's ``limit`` as its ``LIMIT`` takes it (``None``: all rows).

    :raise InvalidArgumentError: not ``None`` nor an ``int`` of at least 1
    """
    if limit is None:
        return None
    if type(limit) is not int or limit < 1:
        raise InvalidArgumentError(
            f"limit must be an int of at least 1, not {shown(limit)}"
        )
    return None if limit > _MAX_LIMIT else limit


_CHARGES = ", ".join(f"'{kind}'" for kind in SPEND_KINDS)

#: the team charges in the window, each net of its refunds; $3 a team id to
#: keep (NULL: every team)
_TEAM_FACTS = f"""
WITH refunded AS (
    SELECT link_id, sum(amount) AS amount FROM spendgate_ledger
    WHERE kind = '{LedgerKind.REFUND}' AND link_id IS NOT NULL AND occurred_at >= $1
    GROUP BY link_id
), charges AS (
    SELECT c.team_id, c.user_id, c.amount - coalesce(r.amount, 0) AS amount,
        coalesce(r.amount, 0) AS refunded, c.input_tokens, c.output_tokens
    FROM spendgate_ledger c LEFT JOIN refunded r ON r.link_id = c.entry_id
    WHERE c.team_id IS NOT NULL AND c.kind IN ({_CHARGES})
        AND c.occurred_at >= $1 AND c.occurred_at < $2
        AND ($3::text IS NULL OR c.team_id = $3)
)"""

_SUMS = (
    "count(*)::bigint AS calls,"
    " (coalesce(sum(amount), 0) * 1000000)::bigint AS total_micros,"
    " (coalesce(sum(refunded), 0) * 1000000)::bigint AS refunded_micros,"
    " coalesce(sum(input_tokens), 0)::bigint AS input_tokens,"
    " coalesce(sum(output_tokens), 0)::bigint AS output_tokens"
)


@dataclass(frozen=True)
class TeamMemberSpend:
    """Net spend of one member on one team's pool over the window."""

    team_id: str
    user_id: str
    #: charges counted
    calls: int
    #: the charges less their refunds
    total: Decimal
    input_tokens: int
    output_tokens: int
    #: given back by refunds of these charges (already taken off ``total``)
    refunded: Decimal = Decimal(0)


class TeamAnalytics:
    """The teams' queries of :class:`~spendgate.ledger.analytics.Analytics`."""

    # (Analytics': runs the SQL with the window as $1 and $2, then *args)
    _fetch: Callable[..., Awaitable[list[Any]]]

    async def spend_by_team(
        self,
        since: datetime | date | None = None,
        until: datetime | date | None = None,
        *,
        limit: int | None = None,
    ) -> list[SpendGroup]:
        """Net spend on each team's pool (``key``: the team id), largest
        first (ties by team).

        :param limit: at most this many teams; ``None`` for all
        :raise InvalidArgumentError: a limit that is not an int of at least 1
        """
        rows = await self._fetch(
            f"{_TEAM_FACTS} SELECT team_id AS key, {_SUMS} FROM charges"
            " GROUP BY team_id ORDER BY total_micros DESC, team_id LIMIT $4",
            since,
            until,
            None,
            row_limit(limit),
        )
        return [SpendGroup.of(r) for r in rows]

    async def spend_by_team_member(
        self,
        team_id: str | None = None,
        since: datetime | date | None = None,
        until: datetime | date | None = None,
        *,
        limit: int | None = None,
    ) -> list[TeamMemberSpend]:
        """Net spend per (team, member) on the teams' pools, largest first
        (ties by team, then user).

        :param team_id: only this team's members; ``None`` for every team
        :param limit: at most this many rows; ``None`` for all
        :raise InvalidArgumentError: a limit that is not an int of at least 1
        """
        rows = await self._fetch(
            f"{_TEAM_FACTS} SELECT team_id, user_id, {_SUMS} FROM charges"
            " GROUP BY team_id, user_id"
            " ORDER BY total_micros DESC, team_id, user_id LIMIT $4",
            since,
            until,
            team_id,
            row_limit(limit),
        )
        return [
            TeamMemberSpend(
                team_id=r["team_id"],
                user_id=r["user_id"],
                calls=r["calls"],
                total=from_micros(r["total_micros"]),
                input_tokens=r["input_tokens"],
                output_tokens=r["output_tokens"],
                refunded=from_micros(r["refunded_micros"]),
            )
            for r in rows
        ]
