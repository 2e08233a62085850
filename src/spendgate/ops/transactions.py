"""A user's transactions: the ledger entries that name them, newest first.

Where they are read from depends on the deployment:

- with ``postgres_dsn`` set, from ``spendgate_ledger`` (one connection per
  call): everything the flusher has moved, which is every entry but the last
  flush interval's (an entry reaches Postgres a flush after its fact);
- without it, from the Redis ledger stream: nothing drains the stream then,
  so it holds the newest ``ledger_maxlen`` entries (1,000,000 by default) of
  every user. The stream is read from its newest entry back, at most
  :data:`STREAM_SCAN_MAX` entries per call, and ordered as it was written.
  On a sharded deployment that is the user's bucket's stream; once the keys
  were rebucketed (``spendgate rebucket``), every bucket's and the root's
  too, the user's first (the entries written before a move stay in the
  stream they were written to), within the same bound in all.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from spendgate.core.ids import user_id_of
from spendgate.core.money import from_micros
from spendgate.core.protocol import FIELD
from spendgate.core.shards import layout_key
from spendgate.core.store import UNAVAILABLE_ERRORS, unavailable
from spendgate.core.windows import EPOCH, OPEN_END, from_ms, to_ms
from spendgate.corrections import Transaction
from spendgate.errors import (
    ConfigurationError,
    InvalidArgumentError,
    LedgerUnavailableError,
)
from spendgate.errors.arguments import shown
from spendgate.ledger.entries import clean_text
from spendgate.ops.base import Operations

#: the most transactions one call returns
MAX_TRANSACTIONS = 1000
#: the most stream entries one call reads without Postgres
STREAM_SCAN_MAX = 100_000
_PAGE = 1000

_OPEN_START_MS, _OPEN_END_MS = to_ms(EPOCH), to_ms(OPEN_END)

#: the columns a transaction is read from, quoted ("window" is reserved)
_COLUMNS = (
    "entry_id",
    "kind",
    "occurred_at",
    "amount",
    "user_id",
    "project_id",
    "model",
    "link_id",
    "grant_id",
    "team_id",
    "scope",
    "window",
    "idempotency_key",
    "lease_id",
    "price_version",
    "metadata",
)
_SELECT = (
    f"SELECT {', '.join(chr(34) + c + chr(34) for c in _COLUMNS)},"
    ' ("amount" * 1000000)::bigint AS micros,'
    ' ("allowance_used" * 1000000)::bigint AS allowance_micros'
    " FROM spendgate_ledger"
    " WHERE user_id = $1 AND occurred_at >= $2 AND occurred_at < $3"
    " ORDER BY occurred_at DESC, entry_id DESC LIMIT $4"
)


def _bound_ms(moment: datetime | date | None, name: str, open_ms: int) -> int:
    """A window bound in ms, within the open window's: every entry lies in
    it, and an instant past it (its UTC in year 10000, or 0) has no
    datetime, hence no Postgres timestamp."""
    if moment is None:
        return open_ms
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            raise InvalidArgumentError(f"{name} must be an aware datetime (UTC)")
        ms = to_ms(moment)
    elif isinstance(moment, date):
        ms = to_ms(datetime(moment.year, moment.month, moment.day, tzinfo=UTC))
    else:
        raise InvalidArgumentError(
            f"{name} must be a datetime or a date, not {shown(moment)}"
        )
    return min(max(ms, _OPEN_START_MS), _OPEN_END_MS)


def _metadata(raw: str | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return {"_unparsed": raw}
    return value if isinstance(value, dict) else {"_value": value}


class Transactions(Operations):
    """``list_transactions``."""

    async def list_transactions(
        self,
        user_id: Any,
        since: datetime | date | None = None,
        until: datetime | date | None = None,
        limit: int = 100,
    ) -> list[Transaction]:
        """A user's ledger entries, newest first: charges, refunds, grants,
        expiries and the adjustments of their own counters.

        Read from Postgres when ``postgres_dsn`` is set (what the flusher has
        moved), else from the Redis ledger stream (its newest entries; see
        :mod:`spendgate.ops.transactions`).

        :param since: from this instant on (a date: its 00:00 UTC), inclusive
        :param until: before this instant, exclusive
        :param limit: at most this many, 1 to :data:`MAX_TRANSACTIONS`
        :raise InvalidArgumentError: a bad limit, or a naive datetime
        :raise LedgerUnavailableError: Postgres could not be reached
        """
        user, start, end = _query(user_id, since, until, limit, self._max_id)
        if start >= end:
            return []
        if self.config.postgres_dsn:
            return await _from_postgres(
                self.config.postgres_dsn, user, start, end, limit
            )
        return await self._from_stream(user, start, end, limit)

    async def _from_stream(
        self, user: str, start_ms: int, end_ms: int, limit: int
    ) -> list[Transaction]:
        self._store.ensure_open()
        redis = self._store.client
        assert redis is not None
        own = self.keys.of(user)  # (sharded: the user's bucket's)
        homes = [own]
        if len(self.keys.stream_homes()) > 1 and await self._rebucketed(redis):
            # A rebucketing left the user's earlier entries where they were
            # written: the root's stream, or another bucket's.
            homes += [h for h in self.keys.stream_homes() if h is not own]
        found: list[tuple[tuple[int, int], Transaction]] = []
        budget, wanted = STREAM_SCAN_MAX, user.encode()
        for home in homes:
            scanned = await _scan(
                redis, home.ledger, wanted, start_ms, end_ms, limit, budget, found
            )
            budget -= scanned
            if budget <= 0:
                break
        if len(homes) > 1:  # (newest first over every stream: as written)
            found.sort(key=lambda pair: pair[0], reverse=True)
        return [transaction for _, transaction in found[:limit]]

    async def _rebucketed(self, redis: Any) -> bool:
        """Whether the keys were ever rebucketed (``spendgate rebucket``
        writes the root's ``layout``)."""
        try:
            return bool(await redis.exists(layout_key(self.config.key_prefix)))
        except UNAVAILABLE_ERRORS as exc:
            raise unavailable(exc) from exc


async def _scan(
    redis: Any,
    ledger: str,
    wanted: bytes,
    start_ms: int,
    end_ms: int,
    limit: int,
    budget: int,
    found: list[tuple[tuple[int, int], Transaction]],
) -> int:
    """Add to ``found`` the newest (at most ``limit``) entries of ``ledger``
    naming the user ``wanted`` in the window, with their stream ids, reading
    at most about ``budget`` entries from the newest back; answers how many
    were read."""
    cursor, scanned, matched = "+", 0, 0
    while scanned < budget:
        try:
            page: list[Any] = (
                await redis.xrevrange(ledger, cursor, "-", count=_PAGE) or []
            )
        except UNAVAILABLE_ERRORS as exc:
            raise unavailable(exc) from exc
        for sid, fields in page:
            if fields.get(_USER) != wanted:
                continue
            at = int(fields.get(_OCCURRED_AT, b"0"))
            if start_ms <= at < end_ms:
                ms, _, seq = clean_text(sid).partition("-")
                found.append(((int(ms), int(seq or 0)), _from_fields(fields)))
                matched += 1
                if matched == limit:
                    return scanned + len(page)
        scanned += len(page)
        if len(page) < _PAGE:
            break
        cursor = "(" + clean_text(page[-1][0])
    return scanned


async def postgres_transactions(
    dsn: str,
    user_id: Any,
    since: datetime | date | None = None,
    until: datetime | date | None = None,
    limit: int = 100,
    *,
    max_id_length: int,
) -> list[Transaction]:
    """``list_transactions`` of a deployment with a Postgres ledger, read
    without a manager: no Redis is needed (``spendgate transactions`` on a
    reporting host). Same checks and errors."""
    user, start, end = _query(user_id, since, until, limit, max_id_length)
    if start >= end:
        return []
    return await _from_postgres(dsn, user, start, end, limit)


def _query(
    user_id: Any,
    since: datetime | date | None,
    until: datetime | date | None,
    limit: int,
    max_id_length: int,
) -> tuple[str, int, int]:
    """The user and the window in ms of a listing, checked."""
    user = user_id_of(user_id, max_id_length)
    if type(limit) is not int or not 1 <= limit <= MAX_TRANSACTIONS:
        raise InvalidArgumentError(
            f"limit must be an int from 1 to {MAX_TRANSACTIONS}, not {shown(limit)}"
        )
    start = _bound_ms(since, "since", _OPEN_START_MS)
    return user, start, _bound_ms(until, "until", _OPEN_END_MS)


async def _from_postgres(
    dsn: str, user: str, start_ms: int, end_ms: int, limit: int
) -> list[Transaction]:
    from spendgate.ledger.pg import connect, is_unavailable, ledger_schema

    conn = await connect(dsn)
    try:
        with ledger_schema():
            rows = await conn.fetch(
                _SELECT, user, from_ms(start_ms), from_ms(end_ms), limit
            )
    except ConfigurationError:
        raise
    except Exception as exc:
        if is_unavailable(exc):
            raise LedgerUnavailableError(f"Postgres failed: {exc}") from exc
        raise
    finally:
        await conn.close()
    return [_from_row(r) for r in rows]


_USER = FIELD["user_id"].encode()
_OCCURRED_AT = FIELD["occurred_at"].encode()


def _allowance(micros: object) -> Decimal | None:
    """The part of a charge a plan's allowance paid (``None``: none)."""
    return None if not micros else from_micros(int(str(micros)))


def _from_row(r: Any) -> Transaction:
    return Transaction(
        entry_id=r["entry_id"],
        kind=r["kind"],
        occurred_at=r["occurred_at"].astimezone(UTC),
        amount=from_micros(int(r["micros"])),
        user_id=r["user_id"],
        project_id=r["project_id"],
        model=r["model"],
        link_id=r["link_id"],
        grant_id=r["grant_id"],
        team_id=r["team_id"],
        scope=r["scope"],
        window=r["window"],
        idempotency_key=r["idempotency_key"],
        lease_id=r["lease_id"],
        price_version=r["price_version"],
        allowance_used=_allowance(r["allowance_micros"]),
        metadata=_metadata(r["metadata"]),
    )


def _from_fields(raw: dict[bytes, bytes]) -> Transaction:
    """A transaction from a stream entry (empty fields read as absent)."""
    f = {
        column: clean_text(raw[name.encode()]) or None
        for column, name in FIELD.items()
        if raw.get(name.encode())
    }
    version = f.get("price_version")
    return Transaction(
        entry_id=f.get("entry_id") or "",
        kind=f.get("kind") or "",
        occurred_at=from_ms(int(f.get("occurred_at") or 0)),
        amount=from_micros(int(f.get("amount") or 0)),
        user_id=f.get("user_id"),
        project_id=f.get("project_id"),
        model=f.get("model"),
        link_id=f.get("link_id"),
        grant_id=f.get("grant_id"),
        team_id=f.get("team_id"),
        scope=f.get("scope"),
        window=f.get("window"),
        idempotency_key=f.get("idempotency_key"),
        lease_id=f.get("lease_id"),
        price_version=int(version) if version else None,
        allowance_used=_allowance(f.get("allowance_used")),
        metadata=_metadata(f.get("metadata")),
    )
