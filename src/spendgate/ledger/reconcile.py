"""Reconcile: do a day's Redis counters agree with the ledger?

For one day (in the window time zone, UTC by default), every scope's day
counter in Redis (user, project, global; charged by ``spend`` and ``settle``
facts) is compared with the ledger's
account of the same day: the rows in Postgres plus the entries still in the
Redis stream (the flusher's backlog). Both come from the same scripts, so on
a healthy deployment every difference is zero.

The stream is read before Postgres, and stream entries already in Postgres
are counted once: an entry the flusher moves while the reconcile runs is
never counted twice or missed. On a day that is still receiving facts, a fact
that lands between the reads of the counters and of the ledger shows up as a
passing difference; run it again, or reconcile a finished day. Day counters
expire ``counter_retention_seconds`` (default 2 days) after their day: older
days cannot be reconciled (the report says so).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from redis.asyncio import Redis

from spendgate.config import BudgetConfig
from spendgate.core.keys import SCOPE_LETTERS, Keys, glob_escape
from spendgate.core.money import from_micros
from spendgate.core.protocol import FIELD
from spendgate.core.windows import from_ms, to_ms, windows_at
from spendgate.errors import ConfigurationError
from spendgate.ledger.analytics import SPEND_KINDS
from spendgate.ledger.entries import clean_text
from spendgate.ledger.pg import connect, require_dsn

_SCOPES_BY_LETTER = {letter: scope for scope, letter in SCOPE_LETTERS.items()}
_PAGE = 10_000
# the stream fields a backlog entry is read by
_ENTRY_ID, _KIND, _OCCURRED_AT = FIELD["entry_id"], FIELD["kind"], FIELD["occurred_at"]
_USER_ID, _PROJECT_ID, _AMOUNT = FIELD["user_id"], FIELD["project_id"], FIELD["amount"]

ScopeKey = tuple[str, str]


@dataclass(frozen=True)
class ScopeDifference:
    """One scope whose counter and ledger disagree."""

    #: ``"user"``, ``"project"`` or ``"global"``
    scope: str
    #: the user or project id; ``None`` for global
    scope_id: str | None
    #: the Redis day counter (0 when it is missing)
    redis: Decimal
    #: rows in Postgres for that day and scope
    postgres: Decimal
    #: entries still in the stream (not flushed yet)
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
    #: stream entries of that day not yet in Postgres
    backlog_entries: int = 0
    #: the scopes that disagree; empty when healthy
    differences: list[ScopeDifference] = field(default_factory=list)
    #: the day's counters may have expired (older than the retention)
    counters_expired: bool = False

    @property
    def ok(self) -> bool:
        return not self.differences


def _day_bounds_ms(day: date, zone: str) -> tuple[int, int]:
    """The first and last-plus-one millisecond of a day in the window time
    zone (23 or 25 hours long across a daylight saving change)."""
    tz = None if zone == "UTC" else ZoneInfo(zone)
    start = to_ms(datetime(day.year, day.month, day.day, 12, tzinfo=tz or UTC))
    w = windows_at(start, tz)
    return w.day_start_ms, w.day_end_ms


async def _counters(
    redis: Redis, prefix: str, progress: Callable[[str], None] | None
) -> dict[ScopeKey, int]:
    """Every day counter under ``prefix`` as ``{(scope, id): micro-units}``."""
    keys: list[bytes] = []
    async for key in redis.scan_iter(match=glob_escape(prefix) + "*", count=1000):
        keys.append(key)
        if progress is not None and len(keys) % 100_000 == 0:
            progress(f"scanned {len(keys)} counters")
    counters: dict[ScopeKey, int] = {}
    head = len(prefix.encode())
    for i in range(0, len(keys), 1000):
        chunk = keys[i : i + 1000]
        for key, value in zip(chunk, await redis.mget(chunk), strict=True):
            if value is None:
                continue  # expired between SCAN and MGET
            rest = key[head:].decode("utf-8", "replace")
            letter, _, scope_id = rest.partition(":")
            scope = _SCOPES_BY_LETTER.get(letter)
            if scope is not None:
                counters[(scope, clean_text(scope_id))] = int(value)
    return counters


async def _backlog(
    redis: Redis, stream: str, start_ms: int, end_ms: int
) -> dict[str, tuple[str, str, int]]:
    """Stream entries of the day that charge counters: ``{entry_id: (user,
    project, micro-units)}``."""
    found: dict[str, tuple[str, str, int]] = {}
    cursor = "-"
    while True:
        page: list[Any] = await redis.xrange(stream, cursor, "+", count=_PAGE) or []
        for _sid, raw in page:
            fields = {clean_text(k): clean_text(v) for k, v in (raw or {}).items()}
            if fields.get(_KIND) not in SPEND_KINDS:
                continue
            try:
                at = int(fields[_OCCURRED_AT])
                if start_ms <= at < end_ms:
                    found[fields[_ENTRY_ID]] = (
                        fields[_USER_ID],
                        fields.get(_PROJECT_ID, ""),
                        int(fields[_AMOUNT]),
                    )
            except (KeyError, ValueError):
                continue  # malformed: the flusher dead-letters it
        if len(page) < _PAGE:
            return found
        last = clean_text(page[-1][0])
        cursor = "(" + last


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
        redis = Redis.from_url(
            config.redis_url, socket_timeout=30, socket_connect_timeout=5
        )
    keys = Keys(config.key_prefix)
    start_ms, end_ms = _day_bounds_ms(day, config.window_timezone)
    report = ReconcileReport(day=day)
    report.counters_expired = (
        end_ms + config.counter_retention_seconds * 1000 < time.time_ns() // 1_000_000
    )
    try:
        prefix = keys.days(f"{day:%Y%m%d}")
        counters = await _counters(redis, prefix, progress)
        backlog = await _backlog(redis, keys.ledger, start_ms, end_ms)
    finally:
        if own_client:
            await redis.aclose()
    rows, flushed = await _postgres(dsn, start_ms, end_ms, list(backlog))
    ledger_pg: dict[ScopeKey, int] = {}
    ledger_backlog: dict[ScopeKey, int] = {}
    for r in rows:
        _add(ledger_pg, r["user_id"], r["project_id"], int(r["micros"]))
    for entry_id, (user, project, micros) in backlog.items():
        if entry_id not in flushed:
            report.backlog_entries += 1
            _add(ledger_backlog, user, project, micros)
    _compare(report, counters, ledger_pg, ledger_backlog)
    return report


async def _postgres(
    dsn: str, start_ms: int, end_ms: int, ids: list[str]
) -> tuple[list[Any], set[str]]:
    """The day's spend per (user, project) in Postgres, and which of the
    backlog's entry ``ids`` are there already."""
    conn: Any = await connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT user_id, coalesce(project_id, '') AS project_id,"
            " (sum(amount) * 1000000)::bigint AS micros FROM spendgate_ledger"
            " WHERE kind = ANY($1::text[]) AND occurred_at >= $2 AND occurred_at < $3"
            " GROUP BY 1, 2",
            list(SPEND_KINDS),
            from_ms(start_ms),
            from_ms(end_ms),
        )
        flushed: set[str] = set()
        for i in range(0, len(ids), _PAGE):
            flushed.update(
                r["entry_id"]
                for r in await conn.fetch(
                    "SELECT entry_id FROM spendgate_ledger"
                    " WHERE entry_id = ANY($1::text[])",
                    ids[i : i + _PAGE],
                )
            )
    finally:
        await conn.close()
    return list(rows), flushed


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


def _add(sums: dict[ScopeKey, int], user: str, project: str, micros: int) -> None:
    sums[("user", user)] = sums.get(("user", user), 0) + micros
    if project:
        sums[("project", project)] = sums.get(("project", project), 0) + micros
    sums[("global", "")] = sums.get(("global", ""), 0) + micros
