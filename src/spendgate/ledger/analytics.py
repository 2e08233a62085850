"""Analytics over the Postgres ledger: who spent what, on which model, when.

Every query covers a time window on ``occurred_at`` (``since`` inclusive,
``until`` exclusive; ``None`` leaves that side open) and counts **net
spend**: the charges (kinds ``spend`` and ``settle``) net of their refunds,
plus the daily adjustments of the scope grouped by
(:mod:`spendgate.ledger.netspend` says exactly how: a refund counts on its
charge's user, project, model and day). Credits are not spending and are
left out of these; :meth:`Analytics.credits_by_user` reports them (grants
in, expiries out). Amounts come back as exact ``Decimal`` (summed in
Postgres ``numeric``, carried as integer micro-units, never through a
float); the mean is rounded to the micro-unit, and percentiles are
*discrete* (the net amount of an actual call at that rank,
``percentile_disc``), so they are exact too.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Literal

from spendgate.config import BudgetConfig
from spendgate.core import protocol
from spendgate.core.money import from_micros
from spendgate.core.windows import EPOCH, OPEN_END
from spendgate.ledger.analytics_rows import (
    CreditFlow,
    DailySpend,
    SpendGroup,
    SpendStats,
)
from spendgate.ledger.netspend import NET_FACTS, adjust_filter
from spendgate.ledger.pg import connect, ledger_schema, require_dsn
from spendgate.ledger.team_analytics import (
    TeamAnalytics,
    TeamMemberSpend,
    row_limit,
)

__all__ = [
    "PERCENTILES",
    "SPEND_KINDS",
    "Analytics",
    "CreditFlow",
    "DailySpend",
    "GroupBy",
    "SpendGroup",
    "SpendStats",
    "TeamMemberSpend",
]

#: the ledger kinds that are spending (credits are not), as text for SQL
SPEND_KINDS = tuple(str(kind) for kind in protocol.SPEND_KINDS)
#: the percentiles :meth:`Analytics.stats` reports
PERCENTILES = (0.5, 0.9, 0.95, 0.99)

#: the kinds that add credits, as SQL (credit: add_credits before grants)
_CREDIT_KINDS = ", ".join(
    f"'{kind}'" for kind in (protocol.LedgerKind.GRANT, protocol.LedgerKind.CREDIT)
)

_OPEN_START, _OPEN_END = EPOCH, OPEN_END


def _micros(expression: str, name: str) -> str:
    """A sum taken in numeric and turned into integer micro-units in SQL, so
    it reaches Python exactly: numeric(20,6) * 1e6 is an integer."""
    return f"(coalesce(sum({expression}), 0) * 1000000)::bigint AS {name}"


# calls: the charges (a refund or an adjustment is not a call)
_SUMS = (
    "sum(calls)::bigint AS calls,"
    f" {_micros('amount', 'total_micros')},"
    f" {_micros('refunded', 'refunded_micros')},"
    f" {_micros('adjusted', 'adjusted_micros')},"
    f" {_micros('allowance', 'allowance_micros')},"
    " coalesce(sum(input_tokens), 0)::bigint AS input_tokens,"
    " coalesce(sum(output_tokens), 0)::bigint AS output_tokens"
)

GroupBy = Literal["user", "project", "model"]
_GROUP_COLUMNS: dict[str, str] = {
    "user": "user_id",
    "project": "project_id",
    "model": "model",
}


def _bound(moment: datetime | date | None, open_end: datetime) -> datetime:
    """A window bound as an aware datetime: a date is its 00:00 UTC, a naive
    datetime is taken as UTC. It is kept within the open window, which holds
    every row: an instant past it (its UTC in year 10000, or 0) is no
    Postgres timestamp."""
    if moment is None:
        return open_end
    if not isinstance(moment, datetime):
        moment = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    elif moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return min(max(moment, _OPEN_START), _OPEN_END)


def _exact(amount: Decimal | None) -> Decimal | None:
    """A ``numeric`` value written as amounts are: ``0.1``, not ``0.100000``."""
    if amount is None:
        return None
    return from_micros(int(amount.scaleb(6)))


class Analytics(TeamAnalytics):
    """Read-only queries over ``spendgate_ledger`` (the teams' own:
    :class:`~spendgate.ledger.team_analytics.TeamAnalytics`).

    :param config: the settings (``postgres_dsn``); ``BudgetConfig()`` when omitted
    :param dsn: a Postgres DSN overriding ``config.postgres_dsn``
    """

    def __init__(
        self, config: BudgetConfig | None = None, *, dsn: str | None = None
    ) -> None:
        self.config = config if config is not None else BudgetConfig()
        self.dsn = require_dsn(dsn or self.config.postgres_dsn)
        self._conn: Any = None

    async def _db(self) -> Any:
        if self._conn is None or self._conn.is_closed():
            self._conn = await connect(self.dsn)
        return self._conn

    async def aclose(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def __aenter__(self) -> Analytics:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _fetch(
        self,
        sql: str,
        since: datetime | date | None,
        until: datetime | date | None,
        *args: Any,
    ) -> list[Any]:
        conn = await self._db()
        with ledger_schema():
            rows: list[Any] = await conn.fetch(
                sql, _bound(since, _OPEN_START), _bound(until, _OPEN_END), *args
            )
        return rows

    async def spend_by(
        self,
        group: GroupBy,
        since: datetime | date | None = None,
        until: datetime | date | None = None,
        *,
        limit: int | None = None,
    ) -> list[SpendGroup]:
        """Net spend grouped by ``"user"``, ``"project"`` or ``"model"``,
        largest total first (ties by key). The adjustments counted are those
        of the user's or the project's own counters (a model has none).

        :param limit: at most this many groups; ``None`` for all
        :raise InvalidArgumentError: a limit that is not an int of at least 1
        """
        column = _GROUP_COLUMNS[group]
        rows = await self._fetch(
            f"{NET_FACTS} SELECT {column} AS key, {_SUMS} FROM net"
            f" WHERE {adjust_filter(group)}"
            f" GROUP BY {column} ORDER BY total_micros DESC, {column} NULLS LAST"
            " LIMIT $3",
            since,
            until,
            row_limit(limit),
        )
        return [SpendGroup.of(r) for r in rows]

    async def spend_by_user(
        self,
        since: datetime | date | None = None,
        until: datetime | date | None = None,
        *,
        limit: int | None = None,
    ) -> list[SpendGroup]:
        """Net spend per user, largest first."""
        return await self.spend_by("user", since, until, limit=limit)

    async def spend_by_project(
        self,
        since: datetime | date | None = None,
        until: datetime | date | None = None,
        *,
        limit: int | None = None,
    ) -> list[SpendGroup]:
        """Net spend per project, largest first (``key=None``: no project)."""
        return await self.spend_by("project", since, until, limit=limit)

    async def spend_by_model(
        self,
        since: datetime | date | None = None,
        until: datetime | date | None = None,
        *,
        limit: int | None = None,
    ) -> list[SpendGroup]:
        """Net spend per model, largest first (``key=None``: no model given)."""
        return await self.spend_by("model", since, until, limit=limit)

    async def top_users(
        self,
        since: datetime | date | None = None,
        until: datetime | date | None = None,
        *,
        limit: int = 10,
    ) -> list[SpendGroup]:
        """The ``limit`` users whose net spend is the largest."""
        return await self.spend_by("user", since, until, limit=limit)

    async def daily_spend(
        self,
        since: datetime | date | None = None,
        until: datetime | date | None = None,
    ) -> list[DailySpend]:
        """Net spend per UTC day, oldest first (refunds on their charge's
        day, the global counter's adjustments on the day they corrected;
        days with none of these are absent)."""
        rows = await self._fetch(
            f"{NET_FACTS} SELECT (at AT TIME ZONE 'UTC')::date AS day, {_SUMS},"
            " count(DISTINCT user_id) FILTER (WHERE calls = 1) AS users"
            f" FROM net WHERE {adjust_filter('all')} GROUP BY 1 ORDER BY 1",
            since,
            until,
        )
        return [
            DailySpend(
                day=r["day"],
                calls=r["calls"],
                total=from_micros(r["total_micros"]),
                users=r["users"],
                refunded=from_micros(r["refunded_micros"]),
                adjusted=from_micros(r["adjusted_micros"]),
                allowance=from_micros(r["allowance_micros"]),
            )
            for r in rows
        ]

    async def stats(
        self,
        since: datetime | date | None = None,
        until: datetime | date | None = None,
    ) -> SpendStats:
        """Count, net total, distinct users and projects, and the mean,
        minimum, maximum and percentiles of the net cost per call (a charge
        less its refunds)."""
        rows = await self._fetch(
            f"{NET_FACTS} SELECT {_SUMS},"
            " count(DISTINCT user_id) FILTER (WHERE calls = 1) AS users,"
            " count(DISTINCT project_id) FILTER (WHERE calls = 1) AS projects,"
            " round(avg(amount) FILTER (WHERE calls = 1) * 1000000)::bigint"
            " AS mean_micros,"
            " min(amount) FILTER (WHERE calls = 1) AS minimum,"
            " max(amount) FILTER (WHERE calls = 1) AS maximum,"
            " percentile_disc($3::float8[]) WITHIN GROUP (ORDER BY amount)"
            " FILTER (WHERE calls = 1) AS pct"
            f" FROM net WHERE {adjust_filter('all')}",
            since,
            until,
            list(PERCENTILES),
        )
        r = rows[0]
        pct = r["pct"] or [None] * len(PERCENTILES)
        return SpendStats(
            calls=r["calls"] or 0,
            total=from_micros(r["total_micros"]),
            distinct_users=r["users"],
            distinct_projects=r["projects"],
            mean=None if r["mean_micros"] is None else from_micros(r["mean_micros"]),
            minimum=_exact(r["minimum"]),
            maximum=_exact(r["maximum"]),
            percentiles={p: _exact(v) for p, v in zip(PERCENTILES, pct, strict=True)},
            input_tokens=r["input_tokens"],
            output_tokens=r["output_tokens"],
            refunded=from_micros(r["refunded_micros"]),
            adjusted=from_micros(r["adjusted_micros"]),
            allowance=from_micros(r["allowance_micros"]),
        )

    async def credits_by_user(
        self,
        since: datetime | date | None = None,
        until: datetime | date | None = None,
        *,
        limit: int | None = None,
    ) -> list[CreditFlow]:
        """Credits in (grants), out (expiries) and spent, per user, by the
        rows' ``occurred_at`` (a charge's refunds on the charge's row), the
        most granted first (ties by user). Spent is the user's own charges:
        a team's pool pays its members' charges on it, not their credits.

        :param limit: at most this many users; ``None`` for all
        :raise InvalidArgumentError: a limit that is not an int of at least 1
        """
        rows = await self._fetch(
            f"{NET_FACTS}, flows AS ("
            " SELECT user_id,"
            f"  CASE WHEN kind IN ({_CREDIT_KINDS}) THEN amount ELSE 0 END AS granted,"
            f"  CASE WHEN kind = '{protocol.LedgerKind.EXPIRE}' THEN amount"
            "   ELSE 0 END AS expired,"
            "  0::numeric AS spent, 0::numeric AS allowance,"
            f"  (kind IN ({_CREDIT_KINDS}))::int AS grants,"
            f"  (kind = '{protocol.LedgerKind.EXPIRE}')::int AS expiries"
            " FROM spendgate_ledger"
            f" WHERE kind IN ({_CREDIT_KINDS}, '{protocol.LedgerKind.EXPIRE}')"
            "  AND occurred_at >= $1 AND occurred_at < $2"
            " UNION ALL SELECT user_id, 0, 0, amount, allowance, 0, 0 FROM net"
            " WHERE scope IS NULL AND team_id IS NULL)"
            f" SELECT user_id, {_micros('granted', 'granted')},"
            f" {_micros('expired', 'expired')}, {_micros('spent', 'spent')},"
            f" {_micros('allowance', 'allowance')},"
            " sum(grants)::bigint AS grants, sum(expiries)::bigint AS expiries"
            " FROM flows WHERE user_id IS NOT NULL GROUP BY user_id"
            " ORDER BY granted DESC, user_id LIMIT $3",
            since,
            until,
            row_limit(limit),
        )
        return [
            CreditFlow(
                user_id=r["user_id"],
                granted=from_micros(r["granted"]),
                expired=from_micros(r["expired"]),
                spent=from_micros(r["spent"]),
                net=from_micros(r["granted"] - r["expired"] - r["spent"]),
                grants=r["grants"],
                expiries=r["expiries"],
                allowance=from_micros(r["allowance"]),
            )
            for r in rows
        ]
