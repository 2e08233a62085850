"""Analytics over the Postgres ledger: who spent what, on which model, when.

Every query covers a time window on ``occurred_at`` (``since`` inclusive,
``until`` exclusive; ``None`` leaves that side open) and counts the facts that
are spending: kinds ``spend`` and ``settle``. Credits are not spending and are
left out. Amounts come back as exact ``Decimal`` (summed in Postgres
``numeric``, carried as integer micro-units, never through a float); the mean
is rounded to the micro-unit, and percentiles are *discrete* (the amount of
an actual call at that rank, ``percentile_disc``), so they are exact too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from types import TracebackType
from typing import Any, Literal

from spendgate.config import BudgetConfig
from spendgate.core import protocol
from spendgate.core.money import from_micros
from spendgate.ledger.pg import connect, require_dsn

#: the ledger kinds that are spending (credits are not), as text for SQL
SPEND_KINDS = tuple(str(kind) for kind in protocol.SPEND_KINDS)
#: the percentiles :meth:`Analytics.stats` reports
PERCENTILES = (0.5, 0.9, 0.95, 0.99)

_OPEN_START = datetime(1970, 1, 1, tzinfo=UTC)
_OPEN_END = datetime(9999, 1, 1, tzinfo=UTC)

_WINDOW = "kind = ANY($1::text[]) AND occurred_at >= $2 AND occurred_at < $3"

# Sums are taken in numeric and turned into integer micro-units in SQL, so
# they reach Python exactly: numeric(20,6) * 1e6 is an integer.
_SUMS = (
    "count(*) AS calls,"
    " (coalesce(sum(amount), 0) * 1000000)::bigint AS total_micros,"
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
    datetime is taken as UTC."""
    if moment is None:
        return open_end
    if not isinstance(moment, datetime):
        return datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


def _exact(amount: Decimal | None) -> Decimal | None:
    """A ``numeric(20,6)`` value written as amounts are: ``0.1``, not ``0.100000``."""
    if amount is None:
        return None
    return from_micros(int(amount.scaleb(6)))


@dataclass(frozen=True)
class SpendGroup:
    """Spending of one user, project or model over the window."""

    #: the user id, project id or model; ``None`` for "no project" / "no model"
    key: str | None
    #: facts counted
    calls: int
    #: their total amount
    total: Decimal
    #: token counts summed where the metadata carried them (0 otherwise)
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class DailySpend:
    """Spending of one UTC day."""

    day: date
    calls: int
    total: Decimal
    #: users that spent that day
    users: int


@dataclass(frozen=True)
class SpendStats:
    """Aggregates over the window; amounts ``None`` when there were no calls."""

    #: facts counted (cost per call = the amount of one fact)
    calls: int
    total: Decimal
    distinct_users: int
    distinct_projects: int
    #: mean cost per call, rounded to the micro-unit
    mean: Decimal | None
    minimum: Decimal | None
    maximum: Decimal | None
    #: discrete percentiles of cost per call, keyed by fraction (0.5, 0.9, ...)
    percentiles: dict[float, Decimal | None]
    input_tokens: int
    output_tokens: int


class Analytics:
    """Read-only queries over ``spendgate_ledger``.

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
        rows: list[Any] = await conn.fetch(
            sql,
            list(SPEND_KINDS),
            _bound(since, _OPEN_START),
            _bound(until, _OPEN_END),
            *args,
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
        """Spending grouped by ``"user"``, ``"project"`` or ``"model"``,
        largest total first (ties by key).

        :param limit: at most this many groups; ``None`` for all
        """
        column = _GROUP_COLUMNS[group]
        rows = await self._fetch(
            f"SELECT {column} AS key, {_SUMS} FROM spendgate_ledger WHERE {_WINDOW}"
            f" GROUP BY {column} ORDER BY total_micros DESC, {column} NULLS LAST"
            " LIMIT $4",
            since,
            until,
            limit,
        )
        return [
            SpendGroup(
                key=r["key"],
                calls=r["calls"],
                total=from_micros(r["total_micros"]),
                input_tokens=r["input_tokens"],
                output_tokens=r["output_tokens"],
            )
            for r in rows
        ]

    async def spend_by_user(
        self,
        since: datetime | date | None = None,
        until: datetime | date | None = None,
        *,
        limit: int | None = None,
    ) -> list[SpendGroup]:
        """Spending per user, largest first."""
        return await self.spend_by("user", since, until, limit=limit)

    async def spend_by_project(
        self,
        since: datetime | date | None = None,
        until: datetime | date | None = None,
        *,
        limit: int | None = None,
    ) -> list[SpendGroup]:
        """Spending per project, largest first (``key=None``: no project)."""
        return await self.spend_by("project", since, until, limit=limit)

    async def spend_by_model(
        self,
        since: datetime | date | None = None,
        until: datetime | date | None = None,
        *,
        limit: int | None = None,
    ) -> list[SpendGroup]:
        """Spending per model, largest first (``key=None``: no model given)."""
        return await self.spend_by("model", since, until, limit=limit)

    async def top_users(
        self,
        since: datetime | date | None = None,
        until: datetime | date | None = None,
        *,
        limit: int = 10,
    ) -> list[SpendGroup]:
        """The ``limit`` users who spent the most."""
        return await self.spend_by("user", since, until, limit=limit)

    async def daily_spend(
        self,
        since: datetime | date | None = None,
        until: datetime | date | None = None,
    ) -> list[DailySpend]:
        """Spending per UTC day, oldest first (days without spending are absent)."""
        rows = await self._fetch(
            "SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, count(*) AS calls,"
            " (sum(amount) * 1000000)::bigint AS total_micros,"
            " count(DISTINCT user_id) AS users"
            f" FROM spendgate_ledger WHERE {_WINDOW} GROUP BY 1 ORDER BY 1",
            since,
            until,
        )
        return [
            DailySpend(
                day=r["day"],
                calls=r["calls"],
                total=from_micros(r["total_micros"]),
                users=r["users"],
            )
            for r in rows
        ]

    async def stats(
        self,
        since: datetime | date | None = None,
        until: datetime | date | None = None,
    ) -> SpendStats:
        """Count, total, distinct users and projects, and the mean, minimum,
        maximum and percentiles of the cost per call."""
        rows = await self._fetch(
            f"SELECT {_SUMS},"
            " count(DISTINCT user_id) AS users,"
            " count(DISTINCT project_id) AS projects,"
            " round(avg(amount) * 1000000)::bigint AS mean_micros,"
            " min(amount) AS minimum, max(amount) AS maximum,"
            " percentile_disc($4::float8[]) WITHIN GROUP (ORDER BY amount) AS pct"
            f" FROM spendgate_ledger WHERE {_WINDOW}",
            since,
            until,
            list(PERCENTILES),
        )
        r = rows[0]
        pct = r["pct"] or [None] * len(PERCENTILES)
        return SpendStats(
            calls=r["calls"],
            total=from_micros(r["total_micros"]),
            distinct_users=r["users"],
            distinct_projects=r["projects"],
            mean=None if r["mean_micros"] is None else from_micros(r["mean_micros"]),
            minimum=_exact(r["minimum"]),
            maximum=_exact(r["maximum"]),
            percentiles={p: _exact(v) for p, v in zip(PERCENTILES, pct, strict=True)},
            input_tokens=r["input_tokens"],
            output_tokens=r["output_tokens"],
        )
