"""What reconcile reads: one UTC day's counters in Redis, and the ledger's
account of that day, from the stream's backlog and from Postgres.

The ledger's account of a day, per scope, is net of refunds and adjustments:

- each charge (``spend``, ``settle``) of the day adds its amount to its
  user, its project (if any) and the global scope;
- each refund of a charge of the day takes its amount off the same scopes,
  whenever it was given. Its day is its ``window`` (the UTC day whose
  counters it lowered) when it carries one, else its charge's (found in
  Postgres or among the backlog's charges of the day), else its own;
- each ``adjust`` of the day's window (``window`` = the day) adds its signed
  amount to the one scope it names. Monthly adjustments move no day counter.

Expiries and grants move no counter, and are not read.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from redis.asyncio import Redis

from spendgate.core.keys import SCOPE_LETTERS, glob_escape
from spendgate.core.protocol import FIELD, SPEND_KINDS, LedgerKind
from spendgate.core.windows import from_ms, to_ms, windows_at
from spendgate.ledger.entries import clean_text
from spendgate.ledger.pg import connect

_SCOPES_BY_LETTER = {letter: scope for scope, letter in SCOPE_LETTERS.items()}
_PAGE = 10_000
_CHARGES = frozenset(str(kind) for kind in SPEND_KINDS)
_REFUND, _ADJUST = str(LedgerKind.REFUND), str(LedgerKind.ADJUST)
_READ = _CHARGES | {_REFUND, _ADJUST}

#: (scope, scope id); the global scope's id is ""
ScopeKey = tuple[str, str]


class Movement(NamedTuple):
    """What one ledger entry did to the day's counters."""

    #: the entry id (an entry in both the backlog and Postgres counts once)
    entry_id: str
    #: the scopes it moved: ``(scope, id)`` pairs
    scopes: tuple[ScopeKey, ...]
    #: signed micro-units (a refund's is negative)
    micros: int


def day_bounds_ms(day: date, zone: str = "UTC") -> tuple[int, int]:
    """The first and the end (exclusive) millisecond of a day in the window
    time zone (23 or 25 hours long across a daylight saving change)."""
    tz = None if zone == "UTC" else ZoneInfo(zone)
    start = to_ms(datetime(day.year, day.month, day.day, 12, tzinfo=tz or UTC))
    w = windows_at(start, tz)
    return w.day_start_ms, w.day_end_ms


def _charge_scopes(user: str | None, project: str | None) -> tuple[ScopeKey, ...]:
    scopes: list[ScopeKey] = []
    if user:
        scopes.append(("user", user))
    if project:
        scopes.append(("project", project))
    scopes.append(("global", ""))
    return tuple(scopes)


def adjust_scope(scope: str | None, user: str | None, project: str | None) -> ScopeKey:
    """The one counter an adjustment moved."""
    if scope == "user":
        return ("user", user or "")
    if scope == "project":
        return ("project", project or "")
    return ("global", "")


async def counters(
    redis: Redis, prefix: str, progress: Callable[[str], None] | None
) -> dict[ScopeKey, int]:
    """Every day counter under ``prefix`` as ``{(scope, id): micro-units}``."""
    keys: list[bytes] = []
    async for key in redis.scan_iter(match=glob_escape(prefix) + "*", count=1000):
        keys.append(key)
        if progress is not None and len(keys) % 100_000 == 0:
            progress(f"scanned {len(keys)} counters")
    found: dict[ScopeKey, int] = {}
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
                found[(scope, clean_text(scope_id))] = int(value)
    return found


class Backlog(NamedTuple):
    """The stream's entries that may move the day's counters."""

    #: charges of the day, and adjustments of the day's window
    movements: list[Movement]
    #: every refund in the stream: its fields (by column), decided later
    refunds: list[dict[str, str]]
    #: the day's charges by entry id: their scopes (a refund's charge)
    charges: dict[str, tuple[ScopeKey, ...]]


async def read_backlog(
    redis: Redis, stream: str, day: date, start_ms: int, end_ms: int
) -> Backlog:
    """The stream's entries of :class:`Backlog`, read page by page."""
    backlog = Backlog([], [], {})
    label = day.isoformat()
    cursor = "-"
    while True:
        page: list[Any] = await redis.xrange(stream, cursor, "+", count=_PAGE) or []
        for _sid, raw in page:
            fields = {clean_text(k): clean_text(v) for k, v in (raw or {}).items()}
            try:
                _read_entry(backlog, fields, label, start_ms, end_ms)
            except (KeyError, ValueError):
                continue  # malformed: the flusher dead-letters it
        if len(page) < _PAGE:
            return backlog
        cursor = "(" + clean_text(page[-1][0])


def _read_entry(
    backlog: Backlog, fields: dict[str, str], label: str, start_ms: int, end_ms: int
) -> None:
    kind = fields.get(FIELD["kind"])
    if kind not in _READ:
        return
    row = {column: fields.get(name, "") for column, name in FIELD.items()}
    micros = int(row["amount"])
    entry = row["entry_id"]
    if kind == _REFUND:
        backlog.refunds.append(row)
    elif kind == _ADJUST:
        if row["window"] == label:
            scope = adjust_scope(row["scope"], row["user_id"], row["project_id"])
            backlog.movements.append(Movement(entry, (scope,), micros))
    elif start_ms <= int(row["occurred_at"]) < end_ms:
        scopes = _charge_scopes(row["user_id"], row["project_id"])
        backlog.charges[entry] = scopes
        backlog.movements.append(Movement(entry, scopes, micros))


class PostgresSide(NamedTuple):
    """The day's account in Postgres."""

    #: charges of the day grouped by scopes (entry id ""), refunds and
    #: adjustments one by one
    movements: list[Movement]
    #: which of the backlog's entry ids are in Postgres already
    flushed: set[str]
    #: the charges in Postgres of the backlog's refunds: (UTC day, scopes)
    charges: dict[str, tuple[date, tuple[ScopeKey, ...]]]


async def read_postgres(
    dsn: str, day: date, start_ms: int, end_ms: int, backlog: Backlog
) -> PostgresSide:
    """The day's charges, the refunds since the day began that lowered it,
    the day's adjustments; and what of the backlog is already there."""
    since, until = from_ms(start_ms), from_ms(end_ms)
    conn: Any = await connect(dsn)
    try:
        side = PostgresSide([], set(), {})
        for r in await conn.fetch(_CHARGES_SQL, since, until):
            scopes = _charge_scopes(r["user_id"], r["project_id"])
            side.movements.append(Movement("", scopes, int(r["micros"])))
        for r in await conn.fetch(_REFUNDS_SQL, since):
            side.movements.extend(_pg_refund(r, day, backlog))
        for r in await conn.fetch(_ADJUSTS_SQL, since, day.isoformat()):
            scope = adjust_scope(r["scope"], r["user_id"], r["project_id"])
            side.movements.append(Movement(r["entry_id"], (scope,), r["micros"]))
        ids = [m.entry_id for m in backlog.movements] + [
            r["entry_id"] for r in backlog.refunds
        ]
        links = [r["link_id"] for r in backlog.refunds if r["link_id"]]
        for i in range(0, max(len(ids), len(links)), _PAGE):
            await _lookup(conn, side, ids[i : i + _PAGE], links[i : i + _PAGE])
    finally:
        await conn.close()
    return side


def _pg_refund(r: Any, day: date, backlog: Backlog) -> list[Movement]:
    """A refund row of Postgres, when it lowered the day's counters."""
    charge_day: date | None = None
    scopes = None
    if r["charge_at"] is not None:
        charge_day = _utc_day(r["charge_at"])
        scopes = _charge_scopes(r["charge_user"], r["charge_project"])
    elif r["link_id"] in backlog.charges:  # flushed before its charge
        charge_day, scopes = day, backlog.charges[r["link_id"]]
    own_day = _utc_day(r["occurred_at"])
    if _refund_day(r["window"] or "", charge_day, own_day) != day:
        return []
    if scopes is None:
        scopes = _charge_scopes(r["user_id"], r["project_id"])
    return [Movement(r["entry_id"], scopes, -int(r["micros"]))]


async def _lookup(
    conn: Any, side: PostgresSide, ids: list[str], links: list[str]
) -> None:
    """Which ``ids`` are flushed, and the charges ``links`` name."""
    rows = await conn.fetch(_FLUSHED_SQL, ids, links)
    for r in rows:
        if r["flushed"]:
            side.flushed.add(r["entry_id"])
        if r["linked"]:
            side.charges[r["entry_id"]] = (
                _utc_day(r["occurred_at"]),
                _charge_scopes(r["user_id"], r["project_id"]),
            )


def _refund_day(window: str, charge_day: date | None, own_day: date) -> date:
    """The UTC day whose counters a refund lowered: its window when it names
    a day, else its charge's, else its own."""
    if len(window) == 10:
        try:
            return date.fromisoformat(window)
        except ValueError:
            pass
    return charge_day if charge_day is not None else own_day


def _utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def backlog_refunds(backlog: Backlog, side: PostgresSide, day: date) -> list[Movement]:
    """The backlog's refunds that lowered the day's counters."""
    found: list[Movement] = []
    for r in backlog.refunds:
        link = r["link_id"]
        scopes = backlog.charges.get(link)
        charge_day: date | None = day if scopes is not None else None
        if scopes is None and link in side.charges:
            charge_day, scopes = side.charges[link]
        own_day = _utc_day(from_ms(int(r["occurred_at"])))
        if _refund_day(r["window"], charge_day, own_day) != day:
            continue
        if scopes is None:
            scopes = _charge_scopes(r["user_id"], r["project_id"])
        found.append(Movement(r["entry_id"], scopes, -int(r["amount"])))
    return found


_CHARGES_SQL = (
    "SELECT user_id, project_id, (sum(amount) * 1000000)::bigint AS micros"
    " FROM spendgate_ledger WHERE kind IN ("
    + ", ".join(f"'{k}'" for k in sorted(_CHARGES))
    + ") AND occurred_at >= $1 AND occurred_at < $2 GROUP BY 1, 2"
)
# A refund is given after its charge: those of the day's charges are among
# the refunds since the day began.
_REFUNDS_SQL = (
    "SELECT r.entry_id, r.link_id, r.user_id, r.project_id, r.occurred_at,"
    ' r."window",'
    " (r.amount * 1000000)::bigint AS micros, c.occurred_at AS charge_at,"
    " c.user_id AS charge_user, c.project_id AS charge_project"
    " FROM spendgate_ledger r LEFT JOIN spendgate_ledger c"
    " ON c.entry_id = r.link_id"
    f" WHERE r.kind = '{_REFUND}' AND r.occurred_at >= $1"
)
# An adjustment is written on or after the day it corrects.
_ADJUSTS_SQL = (
    "SELECT entry_id, scope, user_id, project_id,"
    " (amount * 1000000)::bigint AS micros FROM spendgate_ledger"
    f" WHERE kind = '{_ADJUST}' AND occurred_at >= $1 AND \"window\" = $2"
)
_FLUSHED_SQL = (
    "SELECT entry_id, occurred_at, user_id, project_id,"
    " entry_id = ANY($1::text[]) AS flushed,"
    " entry_id = ANY($2::text[]) AS linked"
    " FROM spendgate_ledger"
    " WHERE entry_id = ANY($1::text[]) OR entry_id = ANY($2::text[])"
)
