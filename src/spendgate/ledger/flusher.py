"""Flusher: moves the ledger stream from Redis into the Postgres ledger table.

Every fact script appends one entry to the stream ``<prefix>:{sg}:ledger``
inside the step that moves the counters. The flusher drains it:

1. ``XREADGROUP`` a batch as one consumer of a consumer group (entries this
   consumer was given earlier and never acknowledged first, then entries
   pending on consumers idle for ``claim_idle_seconds`` via ``XAUTOCLAIM``,
   then new ones);
2. ``COPY`` the batch into a temporary staging table, then
   ``INSERT ... SELECT ... ON CONFLICT (entry_id) DO NOTHING`` into
   ``spendgate_ledger``, and commit;
3. only then ``XACK`` and ``XDEL`` the batch, both in one ``MULTI``.

Delivery is at least once (a crash anywhere before step 3 leaves the entries
pending, and they are read again) and the insert is idempotent on the entry
id, so every fact lands in Postgres exactly once, whatever is killed when.
Several flushers can run at once: each reads its own entries, and an entry
two of them ever both insert is one row.

When Postgres is down nothing is acknowledged or deleted: :meth:`Flusher.run`
retries with exponential backoff and logs the backlog (entries and the age of
the oldest), which :meth:`Flusher.backlog` also returns. An entry Postgres
refuses as data (it cannot be stored at all) is isolated by bisecting the
batch and moved to the dead-letter stream ``<prefix>:{sg}:ledger:dead``, so
one bad entry never stalls the ledger.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
from collections.abc import Callable, Sequence
from datetime import timedelta
from functools import cache
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from loguru import logger
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from spendgate.config import BudgetConfig
from spendgate.core.connection import embedded_client
from spendgate.core.keys import Keys
from spendgate.core.scripts import lua_dir
from spendgate.core.windows import EPOCH
from spendgate.errors import LedgerUnavailableError, PoisonEntryError
from spendgate.ledger.pg import (
    asyncpg_module,
    connect,
    is_unavailable,
    require_dsn,
)

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

#: the consumer group every flusher of a deployment joins
DEFAULT_GROUP = "spendgate-flusher"

#: the staging table's columns: the entry's fields as Redis holds them (bytes;
#: the integers already checked in Python), in the order of :func:`raw_row`
STAGING_COLUMNS = ("e", "k", "t", "u", "p", "a", "m", "md", "i", "l", "est", "late")

# ON COMMIT DELETE ROWS: the staging rows vanish with every commit, so a
# failed or retried batch never sees the rows of an earlier one.
_CREATE_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS spendgate_ledger_staging (
    e bytea, k bytea, t bigint, u bytea, p bytea, a bigint, m bytea, md bytea,
    i bytea, l bytea, est bigint, late boolean
) ON COMMIT DELETE ROWS
"""

#: metadata keys read as token counts, top level or under "usage", first found
_TOKEN_FIELDS = {
    "input_tokens": ("input_tokens", "prompt_tokens"),
    "output_tokens": ("output_tokens", "completion_tokens"),
}


def _token_sql(column: str) -> str:
    paths = [f"{{{name}}}" for name in _TOKEN_FIELDS[column]]
    paths += [f"{{usage,{name}}}" for name in _TOKEN_FIELDS[column]]
    cases = ", ".join(
        f"CASE WHEN j #>> '{path}' ~ '^[0-9]{{1,18}}$'"
        f" THEN (j #>> '{path}')::bigint END"
        for path in paths
    )
    return f"coalesce({cases})"


# The conversion happens in Postgres, next to the insert, not in this
# process: UTF-8 text from bytes (convert_from refuses invalid UTF-8 and NUL;
# such an entry is isolated and converted in Python instead, see
# Flusher._insert_alone), milliseconds to timestamptz, micro-units to exact
# numeric (bigint * numeric is exact), metadata to jsonb with token counts.
_INSERT = f"""
INSERT INTO spendgate_ledger (
    entry_id, kind, occurred_at, user_id, project_id, model, amount, metadata,
    input_tokens, output_tokens, idempotency_key, lease_id, estimate, late)
SELECT convert_from(e, 'UTF8'), convert_from(k, 'UTF8'),
       timestamptz 'epoch' + t * interval '1 millisecond',
       convert_from(u, 'UTF8'), convert_from(p, 'UTF8'), convert_from(m, 'UTF8'),
       a * 0.000001, j, {_token_sql("input_tokens")}, {_token_sql("output_tokens")},
       convert_from(i, 'UTF8'), convert_from(l, 'UTF8'), est * 0.000001, late
FROM (SELECT *, convert_from(md, 'UTF8')::jsonb AS j
      FROM spendgate_ledger_staging) AS s
ON CONFLICT (entry_id) DO NOTHING
"""

# One entry converted in Python (the slow path), in the order of entry_to_row.
_INSERT_ONE = """
INSERT INTO spendgate_ledger (
    entry_id, kind, occurred_at, user_id, project_id, model, amount, metadata,
    input_tokens, output_tokens, idempotency_key, lease_id, estimate, late)
VALUES ($1, $2, $3, $4, $5, $6, $7::bigint * 0.000001, $8::jsonb, $9, $10, $11,
        $12, $13::bigint * 0.000001, $14)
ON CONFLICT (entry_id) DO NOTHING
"""

#: SQLSTATE classes of errors caused by one entry's content rather than the
#: server's state: data exceptions, integrity violations, program limits
#: (an index row too large for a very long id)
_DATA_ERROR_CLASSES = ("22", "23", "54")

_MAX_BIGINT = 2**63 - 1

# Redis errors that mean "not there right now": retried like a Postgres outage.
_REDIS_UNAVAILABLE = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    ConnectionError,
    TimeoutError,
    OSError,
)

RawFields = dict[bytes, bytes]
StreamEntry = tuple[str, RawFields | None]


class Backlog(NamedTuple):
    """What the stream holds that Postgres does not have yet."""

    #: entries in the stream: delivered to a flusher or not, none yet in Postgres
    entries: int
    #: of those, delivered to a flusher and not acknowledged yet
    pending: int
    #: age of the oldest entry in seconds by the Redis clock; 0.0 when empty
    oldest_age_seconds: float


class _Prepared(NamedTuple):
    """A batch read from the stream, converted, not stored yet."""

    #: every stream id of the batch (acknowledged together)
    ids: list[str]
    #: staging rows, and the entries they came from
    rows: list[tuple[Any, ...]]
    sources: list[tuple[str, RawFields]]
    #: entries that cannot become rows, with the reason
    dead: list[tuple[str, RawFields, str]]


def _is_data_error(exc: BaseException) -> bool:
    state = getattr(exc, "sqlstate", None) or ""
    return state[:2] in _DATA_ERROR_CLASSES


def _honour_lost_cancel() -> None:
    """Raise ``CancelledError`` when this task was cancelled but the
    cancellation got lost on the way.

    On Python 3.11, ``asyncio.wait_for`` (which redis-py wraps around every
    command when a socket timeout is set) drops a cancellation that arrives
    just as the awaited operation completes; the task keeps running with
    ``cancelling()`` above zero. Checked once per pass, so :meth:`Flusher.run`
    still stops when cancelled.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def _abandon(task: asyncio.Task[int]) -> None:
    """Cancel a store still running (its entries stay pending, to be read
    again) and collect its outcome, so no error goes unretrieved."""
    task.cancel()
    try:
        await task
    except BaseException:
        pass


def clean_text(value: bytes | str) -> str:
    """Text as Postgres can store it: decoded UTF-8, NUL replaced by U+FFFD
    (Postgres text cannot hold NUL; ids may, they are opaque)."""
    if isinstance(value, bytes):
        return _text(value)
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def _text(raw: bytes) -> str:
    if b"\x00" in raw:
        raw = raw.replace(b"\x00", "\ufffd".encode())
    return raw.decode("utf-8", "replace")


def _raw_fields(raw: Any) -> RawFields | None:
    if not raw:
        return None
    if not isinstance(raw, dict):
        # a flat [k, v, k, v, ...] list (RESP2 without redis-py's parsing)
        raw = {raw[i]: raw[i + 1] for i in range(0, len(raw) - 1, 2)}
    key = next(iter(raw))
    if isinstance(key, str):
        # a client with decode_responses=True: back to bytes, the slow way
        return {
            k.encode(): v.encode() if isinstance(v, str) else v for k, v in raw.items()
        }
    return cast(RawFields, raw)


def _entries(raw: Any) -> list[StreamEntry]:
    # Fields stay bytes: Postgres decodes them (raw_row, _INSERT).
    return [(clean_text(sid), _raw_fields(fields)) for sid, fields in raw]


def _tokens(meta: Any, names: Sequence[str]) -> int | None:
    if not isinstance(meta, dict):
        return None
    sources = [meta]
    if isinstance(meta.get("usage"), dict):
        sources.append(meta["usage"])
    for source in sources:
        for name in names:
            value = source.get(name)
            if type(value) is int and 0 <= value <= _MAX_BIGINT:
                return value
    return None


def _optional(raw: bytes | None) -> str | None:
    return _text(raw) if raw else None


def _required(fields: RawFields) -> tuple[bytes, bytes, int, bytes, int, int | None]:
    """The fields every entry has: id, kind, time (ms), user, amount and the
    settle estimate (micro-units).

    :raise PoisonEntryError: when one is missing or malformed
    """
    try:
        entry_id, kind, user_id = fields[b"e"], fields[b"k"], fields[b"u"]
        occurred_ms = int(fields[b"t"])
        amount = int(fields[b"a"])
        raw_estimate = fields.get(b"est")
        estimate = int(raw_estimate) if raw_estimate else None
    except (KeyError, ValueError) as exc:
        raise PoisonEntryError(
            f"malformed ledger entry ({exc!r}): {fields!r}"
        ) from None
    if not entry_id or not kind or not user_id or amount < 0:
        raise PoisonEntryError(f"malformed ledger entry: {fields!r}")
    return entry_id, kind, occurred_ms, user_id, amount, estimate


def raw_row(fields: RawFields) -> tuple[Any, ...]:
    """The staging row of one stream entry (see :data:`STAGING_COLUMNS`): the
    fast path, bytes as they are, integers checked.

    :param fields: the entry's fields as Redis returns them (bytes)
    :raise PoisonEntryError: when a required field is missing or malformed
    """
    get = fields.get
    entry_id, kind, occurred_ms, user_id, amount, estimate = _required(fields)
    return (
        entry_id,
        kind,
        occurred_ms,
        user_id,
        get(b"p") or None,
        amount,
        get(b"m") or None,
        get(b"md") or None,
        get(b"i") or None,
        get(b"l") or None,
        estimate,
        get(b"late") == b"1",
    )


def entry_to_row(fields: RawFields) -> tuple[Any, ...]:
    """One stream entry converted in Python, for :data:`_INSERT_ONE`: the
    slow path, for an entry Postgres refused in bulk. Text is cleaned (NUL
    replaced), and metadata that is not JSON is kept as ``{"_unparsed": text}``.

    :param fields: the entry's fields as Redis returns them (bytes)
    :raise PoisonEntryError: when a required field is missing or malformed
    """
    get = fields.get
    entry_id, kind, occurred_ms, user_id, amount, estimate = _required(fields)
    raw_metadata = get(b"md")
    metadata = None
    input_tokens = output_tokens = None
    if raw_metadata:
        if b"\\u0000" in raw_metadata:
            # jsonb refuses the NUL escape that json.dumps writes for "\x00".
            raw_metadata = raw_metadata.replace(b"\\u0000", b"\\ufffd")
        metadata = _text(raw_metadata)
        try:
            meta = json.loads(metadata)
        except ValueError:
            meta = {"_unparsed": metadata}
            metadata = json.dumps(meta)
        input_tokens = _tokens(meta, _TOKEN_FIELDS["input_tokens"])
        output_tokens = _tokens(meta, _TOKEN_FIELDS["output_tokens"])
    return (
        _text(entry_id),
        _text(kind),
        EPOCH + timedelta(milliseconds=occurred_ms),
        _text(user_id),
        _optional(get(b"p")),
        _optional(get(b"m")),
        amount,
        metadata,
        input_tokens,
        output_tokens,
        _optional(get(b"i")),
        _optional(get(b"l")),
        estimate,
        get(b"late") == b"1",
    )


@cache
def _ack_source() -> bytes:
    return (lua_dir() / "ledger_ack.lua").read_bytes()


def _id_tuple(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


class Flusher:
    """Moves ledger entries from the Redis stream into ``spendgate_ledger``.

    Run it in-process (``task = asyncio.create_task(flusher.run())``, cancel
    it or call :meth:`stop` to end) or as ``spendgate flush``.

    :param config: the settings (``redis_url``, ``key_prefix``,
        ``postgres_dsn``, ``flush_interval_seconds``, ``flush_batch_size``);
        ``BudgetConfig()`` (environment) when omitted
    :param redis: an existing client to use instead of connecting from
        ``config`` (not closed by :meth:`aclose`)
    :param dsn: the Postgres DSN, overriding ``config.postgres_dsn``
    :param group: the consumer group, shared by every flusher of a deployment
    :param consumer: this flusher's consumer name, unique per running flusher;
        a restarted flusher that reuses its name picks up what it had been
        given before at once, instead of after ``claim_idle_seconds``.
        Defaults to ``<host>-<pid>-<random>``
    :param claim_idle_seconds: entries pending this long on another consumer
        (one that died) are claimed; defaults to 60 s, well above the time a
        live flusher holds a batch
    :param max_backoff_seconds: the longest wait between retries while
        Postgres or Redis is down, default 30 s
    :param auto_migrate: apply missing migrations on first connect (cheap
        and safe to race: the runner is serialised by an advisory lock)
    :param progress: called with the running count of moved entries after
        every batch of :meth:`run_once`
    """

    def __init__(
        self,
        config: BudgetConfig | None = None,
        *,
        redis: Redis | None = None,
        dsn: str | None = None,
        group: str = DEFAULT_GROUP,
        consumer: str | None = None,
        claim_idle_seconds: float = 60.0,
        max_backoff_seconds: float = 30.0,
        auto_migrate: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.config = config if config is not None else BudgetConfig()
        self.dsn = require_dsn(dsn or self.config.postgres_dsn)
        self.keys = Keys(self.config.key_prefix)
        self.stream = self.keys.ledger
        #: where entries Postgres refuses as data are moved, with the error
        self.dead_letter_stream = self.keys.ledger + ":dead"
        self.group = group
        self.consumer = consumer or _default_consumer()
        self.batch_size = self.config.flush_batch_size
        self.interval_seconds = self.config.flush_interval_seconds
        self.claim_idle_ms = max(1, int(claim_idle_seconds * 1000))
        self.max_backoff_seconds = max_backoff_seconds
        self.auto_migrate = auto_migrate
        self.progress = progress

        self._redis = redis
        self._owns_redis = redis is None
        self._ack: AsyncScript | None = None
        self._conn: Any = None
        self._group_ready = False
        self._wake = asyncio.Event()
        self._stopping = False

        #: entries moved (inserted or found already there, then acknowledged)
        self.moved_total = 0
        #: rows actually inserted (moved minus duplicates of a redelivery)
        self.inserted_total = 0
        #: entries moved to the dead-letter stream
        self.dead_lettered_total = 0
        #: failed attempts in a row (0 while healthy)
        self.consecutive_failures = 0
        #: the last failure, as text; ``None`` after a success
        self.last_error: str | None = None
        #: the backlog measured at the last failure (logged with it)
        self.last_backlog: Backlog | None = None

    # -- connections ---------------------------------------------------------

    @property
    def redis(self) -> Redis:
        if self._redis is None:
            url = self.config.redis_url
            if url:
                # Not the hot path: batches are large, so generous timeouts.
                self._redis = Redis.from_url(
                    url, socket_timeout=30, socket_connect_timeout=5
                )
            else:
                self._redis = embedded_client()
        return self._redis

    @property
    def _ack_script(self) -> AsyncScript:
        if self._ack is None:
            self._ack = self.redis.register_script(_ack_source())
        return self._ack

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self.redis.xgroup_create(
                self.stream, self.group, id="0", mkstream=True
            )
        except redis_errors.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def _pg(self) -> Any:
        conn = self._conn
        if conn is not None and not conn.is_closed():
            return conn
        self._conn = None
        conn = await connect(self.dsn)
        try:
            if self.auto_migrate:
                from spendgate.ledger.migrations import migrate

                await migrate(conn)
            await conn.execute(_CREATE_STAGING)
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn
        return conn

    async def connect(self) -> None:
        """Connect to both stores now (creating the consumer group, and
        applying migrations when ``auto_migrate``), rather than on first need.

        :raise LedgerUnavailableError: Postgres could not be reached
        """
        await self._ensure_group()
        await self._pg()

    def _drop_pg(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None

    async def aclose(self) -> None:
        """Close the Postgres connection and the Redis client (if it was ours)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                async with asyncio.timeout(5):
                    await conn.close()
            except Exception:
                conn.terminate()
        if self._redis is not None and self._owns_redis:
            await self._redis.aclose()
            self._redis = None
            self._ack = None
        self._group_ready = False

    async def __aenter__(self) -> Flusher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- one pass --------------------------------------------------------------

    async def run_once(self) -> int:
        """Move what the stream holds now; return how many entries were moved.

        First the entries this consumer was given and never acknowledged,
        then those of dead consumers, then new ones up to the stream's end as
        of the call (entries added meanwhile wait for the next pass).

        :raise LedgerUnavailableError: Postgres could not be reached; nothing
            of the failed batch was acknowledged
        """
        try:
            return await self._pass()
        except LedgerUnavailableError:
            raise
        except redis_errors.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # The stream (and its group) was deleted under us: the group is
            # created again by the next pass.
            self._group_ready = False
            return 0
        except Exception as exc:
            if is_unavailable(exc):
                self._drop_pg()
                raise LedgerUnavailableError(
                    f"Postgres failed mid-flush: {type(exc).__name__}: {exc}"
                ) from exc
            raise

    async def _pass(self) -> int:
        await self._ensure_group()
        moved = 0
        # Our own unacknowledged entries: a batch whose insert or ack failed.
        while True:
            batch = await self._read("0")
            if not batch:
                break
            moved += await self._move(batch)
            self._report(moved)
        moved += await self._reclaim(moved)
        end = await self._last_id()
        # New entries, up to the end as of now. Each batch is stored (Postgres,
        # then the ack) while the next one is read and converted, so Redis,
        # Postgres and this process work at the same time; batches are still
        # acknowledged one by one, each only after its own commit.
        storing: asyncio.Task[int] | None = None
        try:
            while end is not None:
                batch = await self._read(">")
                prepared = self._prepare(batch)
                if storing is not None:
                    moved += await storing
                    storing = None
                    self._report(moved)
                if not batch:
                    break
                if len(batch) < self.batch_size or _id_tuple(batch[-1][0]) >= end:
                    moved += await self._store(prepared)
                    self._report(moved)
                    break
                storing = asyncio.create_task(self._store(prepared))
        finally:
            if storing is not None:
                await _abandon(storing)
        return moved

    def _report(self, moved: int) -> None:
        if self.progress is not None:
            self.progress(moved)

    async def _read(self, start: str) -> list[StreamEntry]:
        reply = await self.redis.xreadgroup(
            self.group, self.consumer, {self.stream: start}, count=self.batch_size
        )
        if not reply:
            return []
        if isinstance(reply, dict):  # RESP3
            raw = next(iter(reply.values()))
            raw = raw[0] if raw and isinstance(raw[0], list) else raw
        else:
            raw = reply[0][1]
        return _entries(raw)

    async def _reclaim(self, moved: int) -> int:
        """Claim and move entries idle on other consumers (dead flushers)."""
        start = "0-0"
        claimed_moved = 0
        # Bounded: one sweep over the pending list per pass.
        for _ in range(1000):
            reply = await self.redis.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                min_idle_time=self.claim_idle_ms,
                start_id=start,
                count=self.batch_size,
            )
            start = clean_text(reply[0])
            batch = _entries(reply[1])
            if batch:
                logger.info(
                    "spendgate flusher {}: reclaimed {} entries from idle consumers",
                    self.consumer,
                    len(batch),
                )
                claimed_moved += await self._move(batch)
                self._report(moved + claimed_moved)
            if start == "0-0":
                break
        if claimed_moved:
            await self._forget_idle_consumers()
        return claimed_moved

    async def _forget_idle_consumers(self) -> None:
        # Consumers of dead flushers stay listed in the group; drop the idle
        # ones that hold nothing. A live one dropped by mistake is recreated
        # by its next read.
        for info in await self.redis.xinfo_consumers(self.stream, self.group):
            name = clean_text(info["name"])
            if (
                name != self.consumer
                and not info["pending"]
                and (info["idle"] > self.claim_idle_ms)
            ):
                await self.redis.xgroup_delconsumer(self.stream, self.group, name)

    async def _last_id(self) -> tuple[int, int] | None:
        last = await self.redis.xrevrange(self.stream, "+", "-", count=1)
        if not last:
            return None
        return _id_tuple(clean_text(cast(bytes, last[0][0])))

    async def _move(self, batch: list[StreamEntry]) -> int:
        """Insert one batch, commit, then acknowledge and delete it."""
        return await self._store(self._prepare(batch))

    def _prepare(self, batch: list[StreamEntry]) -> _Prepared:
        """Turn a batch into staging rows; malformed entries are set aside."""
        rows: list[tuple[Any, ...]] = []
        sources: list[tuple[str, RawFields]] = []
        dead: list[tuple[str, RawFields, str]] = []
        for sid, fields in batch:
            if fields is None:
                continue  # deleted from the stream (trimmed): nothing to insert
            try:
                rows.append(raw_row(fields))
                sources.append((sid, fields))
            except PoisonEntryError as exc:
                dead.append((sid, fields, str(exc)))
        return _Prepared([sid for sid, _ in batch], rows, sources, dead)

    async def _store(self, prepared: _Prepared) -> int:
        """Insert and commit the rows, dead-letter what Postgres refuses, then
        acknowledge and delete the whole batch."""
        rows, sources, dead = prepared.rows, prepared.sources, prepared.dead
        if rows:
            inserted, refused = await self._insert_isolating(rows, sources)
            self.inserted_total += inserted
            dead.extend((*sources[index], error) for index, error in refused)
        if dead:
            await self._dead_letter(dead)
        # Acknowledged and deleted in one atomic script, only now that the
        # rows are committed.
        await self._ack_script(
            keys=[self.stream], args=[self.group, ",".join(prepared.ids)]
        )
        self.moved_total += len(prepared.ids)
        return len(prepared.ids)

    async def _insert(self, rows: Sequence[tuple[Any, ...]]) -> int:
        conn = await self._pg()
        async with conn.transaction():
            await conn.copy_records_to_table(
                "spendgate_ledger_staging", records=rows, columns=STAGING_COLUMNS
            )
            status: str = await conn.execute(_INSERT)
        return int(status.rsplit(" ", 1)[-1])

    async def _insert_isolating(
        self,
        rows: Sequence[tuple[Any, ...]],
        sources: Sequence[tuple[str, RawFields]],
        offset: int = 0,
    ) -> tuple[int, list[tuple[int, str]]]:
        """Insert ``rows``; when Postgres refuses one as data, bisect to find
        it. Returns the rows inserted and ``(index, error)`` of those refused."""
        asyncpg = asyncpg_module()
        try:
            return await self._insert(rows), []
        except asyncpg.PostgresError as exc:
            if not _is_data_error(exc):
                raise
            if len(rows) == 1:
                return await self._insert_alone(sources[offset][1], offset)
        mid = len(rows) // 2
        left = await self._insert_isolating(rows[:mid], sources, offset)
        right = await self._insert_isolating(rows[mid:], sources, offset + mid)
        return left[0] + right[0], left[1] + right[1]

    async def _insert_alone(
        self, fields: RawFields, offset: int
    ) -> tuple[int, list[tuple[int, str]]]:
        """One entry Postgres refused in bulk (text with NUL, metadata that is
        not JSON, ...): converted and cleaned in Python, and inserted alone.
        When even that is refused, it goes to the dead-letter stream."""
        try:
            row = entry_to_row(fields)
            conn = await self._pg()
            status: str = await conn.execute(_INSERT_ONE, *row)
        except PoisonEntryError as exc:
            return 0, [(offset, str(exc))]
        except asyncpg_module().PostgresError as exc:
            if not _is_data_error(exc):
                raise
            return 0, [(offset, f"{type(exc).__name__}: {exc}")]
        return int(status.rsplit(" ", 1)[-1]), []

    async def _dead_letter(self, dead: list[tuple[str, RawFields, str]]) -> None:
        pipe = self.redis.pipeline(transaction=True)
        for sid, fields, error in dead:
            logger.error(
                "spendgate flusher: ledger entry {} cannot be stored in Postgres, "
                "moved to {}: {}",
                sid,
                self.dead_letter_stream,
                error,
            )
            record: dict[Any, Any] = {**fields, b"sid": sid, b"err": error[:1000]}
            pipe.xadd(self.dead_letter_stream, record)
        await pipe.execute()
        self.dead_lettered_total += len(dead)

    # -- the loop ------------------------------------------------------------------

    async def run(self) -> None:
        """Flush every ``flush_interval_seconds`` until cancelled or :meth:`stop`.

        A full batch is followed at once by the next, so a backlog drains at
        full speed. While Postgres (or Redis) is down it retries with
        exponential backoff up to ``max_backoff_seconds``, logging the
        backlog each time; nothing is acknowledged meanwhile. Closes the
        connections when it ends.
        """
        try:
            while not self._stopping:
                _honour_lost_cancel()
                try:
                    moved = await self.run_once()
                except (LedgerUnavailableError, *_REDIS_UNAVAILABLE) as exc:
                    await self._sleep(await self._failed(exc))
                    continue
                if self.consecutive_failures:
                    logger.info(
                        "spendgate flusher {}: flushing again after {} failed attempts",
                        self.consumer,
                        self.consecutive_failures,
                    )
                    self.consecutive_failures = 0
                    self.last_error = None
                if moved < self.batch_size:
                    await self._sleep(self.interval_seconds)
        finally:
            self._stopping = False
            await self.aclose()

    def stop(self) -> None:
        """Make :meth:`run` return after the batch in progress (at once when
        called before it starts)."""
        self._stopping = True
        self._wake.set()

    async def _sleep(self, seconds: float) -> None:
        # asyncio.wait on a task, not wait_for or timeout(): on Python 3.11
        # those can lose a cancellation that lands just as the timeout fires,
        # and run() would never stop.
        waiter = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({waiter}, timeout=seconds)
        finally:
            waiter.cancel()
        self._wake.clear()

    async def _failed(self, exc: BaseException) -> float:
        self.consecutive_failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        exponent = min(self.consecutive_failures - 1, 16)
        delay = float(
            min(self.max_backoff_seconds, self.interval_seconds * 2**exponent)
        )
        delay *= 0.75 + random.random() / 2  # de-synchronise several flushers
        try:
            self.last_backlog = await self.backlog()
            backlog = (
                f"backlog {self.last_backlog.entries} entries, oldest "
                f"{self.last_backlog.oldest_age_seconds:.1f}s"
            )
        except Exception as backlog_exc:
            backlog = f"backlog unknown ({type(backlog_exc).__name__})"
        logger.warning(
            "spendgate flusher {}: cannot flush ({}); {}; retry {} in {:.1f}s",
            self.consumer,
            self.last_error,
            backlog,
            self.consecutive_failures,
            delay,
        )
        return delay

    async def backlog(self) -> Backlog:
        """Entries waiting in the stream, how many are pending on a flusher,
        and the age of the oldest (by the Redis clock)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.xlen(self.stream)
        pipe.xrange(self.stream, "-", "+", count=1)
        pipe.time()
        entries, first, (seconds, micros) = await pipe.execute()
        pending = 0
        if entries:
            try:
                summary = await self.redis.xpending(self.stream, self.group)
                pending = int(summary["pending"])
            except redis_errors.ResponseError:
                pending = 0  # no group yet: nothing was ever delivered
        age = 0.0
        if first:
            oldest_ms = _id_tuple(clean_text(first[0][0]))[0]
            age = max(
                0.0, (int(seconds) * 1000 + int(micros) // 1000 - oldest_ms) / 1000
            )
        return Backlog(int(entries), pending, age)

    async def flush(self) -> int:
        """Move everything there is, including what arrives meanwhile, until a
        pass finds nothing; for tests and shutdown. Returns the count moved."""
        total = 0
        while True:
            moved = await self.run_once()
            total += moved
            if not moved:
                return total
