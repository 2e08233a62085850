"""Reconcile: do a day's Redis counters agree with the ledger?

For one day (in the window time zone, UTC by default), every scope's day
counter in Redis (user, project, global) is compared with the ledger's
account of the same day, net of refunds and adjustments
(:mod:`spendgate.ledger.reconcile_sources` says exactly what counts): the
rows in Postgres plus the entries still in the Redis stream (the flusher's
backlog). Both come from the same scripts, so on a healthy deployment every
difference is zero. A refund lowers the counters of its charge's day, so it
is counted on that day whenever it was given; an adjustment is counted on
the day whose counter it moved.

The stream is read before Postgres, and stream entries already in Postgres
are counted once: an entry the flusher moves while the reconcile runs is
never counted twice or missed. On a day that is still receiving facts, a fact
that lands between the reads of the counters and of the ledger shows up as a
passing difference; run it again, or reconcile a finished day. Day counters
expire ``counter_retention_seconds`` (default 2 days) after their day: older
days cannot be reconciled (the report says so).

Sharded (``cluster_buckets`` > 1), each bucket keeps its own day counters and
ledger stream: the counters of every stream home are added up (a project's
or the platform's appear in every bucket that charged them) and the backlog
is read from every home's stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from redis.asyncio import Redis

from spendgate.config import BudgetConfig
from spendgate.core.connection import client_for
from spendgate.core.money import from_micros
from spendgate.core.shards import keys_for
from spendgate.errors import ConfigurationError, InvalidArgumentError
from spendgate.ledger.pg import ledger_schema, require_dsn
from spendgate.ledger.reconcile_sources import (
    Backlog,
    Movement,
    ScopeKey,
    backlog_refunds,
    counters,
    day_bounds_ms,
    read_backlog,
    read_postgres,
)


@dataclass(frozen=True)
class ScopeDifference:
    """One scope whose counter and ledger disagree."""

    #: ``"user"``, ``"project"`` or ``"global"``
    scope: str
    #: the user or project id; ``None`` for global
    scope_id: str | None
    #: the Redis day counter (0 when it is missing)
    redis: Decimal
    #: rows in Postgres for that day and scope (net of refunds, adjustments)
    postgres: Decimal
    #: entries still in the stream (not flushed yet), net the same way
    backlog: Decimal

    @property
    def ledger(self) -> Decimal:
        """Postgres plus the backlog: everything the ledger says was spent."""
        return from_micros(int((self.postgres + self.backlog).scaleb(6)))

    @property
    def difference(self) -> Decimal:
        """Counter minus ledger: positive when Redis counted more."""
        return from_micros(int((self.redis - self.ledger).scaleb(6)))


@dataclass
class ReconcileReport:
    """The outcome of one reconcile."""

    day: date
    #: scopes compared (every scope with a counter or a ledger entry)
    scopes_checked: int = 0
    #: the global scope's counter and ledger totals
    redis_total: Decimal = Decimal(0)
    postgres_total: Decimal = Decimal(0)
    backlog_total: Decimal = Decimal(0)
    #: stream entries not yet in Postgres that moved that day's counters
    backlog_entries: int = 0
    #: the scopes that disagree; empty when healthy
    differences: list[ScopeDifference] = field(default_factory=list)
    #: the day's counters may have expired (older than the retention)
    counters_expired: bool = False

    @property
    def ok(self) -> bool:
        return not self.differences


async def reconcile(
    config: BudgetConfig | None = None,
    day: date | None = None,
    *,
    redis: Redis | None = None,
    dsn: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> ReconcileReport:
    """Compare one day's Redis counters with Postgres plus the backlog.

    :param config: the settings (``redis_url``, ``key_prefix``, ``postgres_dsn``)
    :param day: the day, in the window time zone (``window_timezone``);
        today there (system clock) when omitted
    :param redis: an existing client instead of connecting from ``config``
        (not closed here)
    :param dsn: a Postgres DSN overriding ``config.postgres_dsn``
    :param progress: called with a line of text during long scans
    :raise InvalidArgumentError: a day at the calendar's ends, whose bounds
        have no datetime
    """
    config = config if config is not None else BudgetConfig()
    dsn = require_dsn(dsn or config.postgres_dsn)
    if day is None:
        day = datetime.now(ZoneInfo(config.window_timezone)).date()
    own_client = redis is None
    if redis is None:
        if not config.redis_url:
            raise ConfigurationError(
                "reconcile needs the deployment's Redis: set SPENDGATE_REDIS_URL"
            )
        redis = client_for(
            config.redis_url,
            cluster=config.redis_cluster,
            socket_timeout=30,
            socket_connect_timeout=5,
        )
    try:
        start_ms, end_ms = day_bounds_ms(day, config.window_timezone)
    except OverflowError:
        # (its first or its next midnight has no datetime)
        raise InvalidArgumentError(
            f"the day {day} is out of the calendar's range"
        ) from None
    homes = keys_for(config.key_prefix, config.cluster_buckets).stream_homes()
    report = ReconcileReport(day=day)
    report.counters_expired = (
        end_ms + config.counter_retention_seconds * 1000 < time.time_ns() // 1_000_000
    )
    try:
        in_redis: dict[ScopeKey, int] = {}
        backlog = Backlog([], [], {})
        for home in homes:
            found = await counters(redis, home.days(f"{day:%Y%m%d}"), progress)
            for scope, micros in found.items():
                in_redis[scope] = in_redis.get(scope, 0) + micros
            read = await read_backlog(redis, home.ledger, day, start_ms, end_ms)
            backlog.movements.extend(read.movements)
            backlog.refunds.extend(read.refunds)
            backlog.charges.update(read.charges)
    finally:
        if own_client:
            await redis.aclose()
    with ledger_schema():
        side = await read_postgres(dsn, day, start_ms, end_ms, backlog)
    ledger_pg: dict[ScopeKey, int] = {}
    ledger_backlog: dict[ScopeKey, int] = {}
    _add(ledger_pg, side.movements)
    waiting = [
        m
        for m in backlog.movements + backlog_refunds(backlog, side, day)
        if m.entry_id not in side.flushed
    ]
    report.backlog_entries = len(waiting)
    _add(ledger_backlog, waiting)
    _compare(report, in_redis, ledger_pg, ledger_backlog)
    return report


def _add(sums: dict[ScopeKey, int], movements: Iterable[Movement]) -> None:
    for movement in movements:
        for scope in movement.scopes:
            sums[scope] = sums.get(scope, 0) + movement.micros


def _compare(
    report: ReconcileReport,
    counters: dict[ScopeKey, int],
    ledger_pg: dict[ScopeKey, int],
    ledger_backlog: dict[ScopeKey, int],
) -> None:
    """Fill ``report`` with the totals and every scope that disagrees."""
    scopes = set(counters) | set(ledger_pg) | set(ledger_backlog)
    scopes.add(("global", ""))
    report.scopes_checked = len(scopes)
    for scope, scope_id in sorted(scopes):
        in_redis = counters.get((scope, scope_id), 0)
        in_pg = ledger_pg.get((scope, scope_id), 0)
        in_backlog = ledger_backlog.get((scope, scope_id), 0)
        if scope == "global":
            report.redis_total = from_micros(in_redis)
            report.postgres_total = from_micros(in_pg)
            report.backlog_total = from_micros(in_backlog)
        if in_redis != in_pg + in_backlog:
            report.differences.append(
                ScopeDifference(
                    scope=scope,
                    scope_id=scope_id if scope != "global" else None,
                    redis=from_micros(in_redis),
                    postgres=from_micros(in_pg),
                    backlog=from_micros(in_backlog),
                )
            )
