"""Flusher: moves the ledger stream from Redis into the Postgres ledger table.

Every fact script appends one entry to the stream ``<prefix>:{sg}:ledger``
inside the step that moves the counters (sharded, its user's bucket's
``<prefix>:{sg:<b>}:ledger``: the flusher reads every stream home's, each
as below, :mod:`spendgate.ledger.homes`). The flusher drains it:

1. ``XREADGROUP`` a batch as one consumer of a consumer group (entries this
   consumer was given earlier and never acknowledged first, then those of
   flushers whose heartbeat expired, then entries pending on consumers idle
   for ``claim_idle_seconds`` via ``XAUTOCLAIM``, then new ones);
2. ``COPY`` the batch into a temporary staging table, then
   ``INSERT ... SELECT ... ON CONFLICT (entry_id) DO NOTHING`` into
   ``spendgate_ledger``, and commit;
3. only then ``XACK`` and ``XDEL`` the batch, both in one script
   (``stream_ack.lua``; while the event dispatcher reads the stream too, in
   a group of its own, an entry is deleted once both have acknowledged it).

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

Each flusher keeps a heartbeat, a key with a TTL renewed while it runs
(:mod:`spendgate.ledger.heartbeat`): the entries of a flusher that was
killed are claimed by the others as soon as its heartbeat expires.

The entry schema and its rows are :mod:`spendgate.ledger.entries`, the SQL
:mod:`spendgate.ledger.sql`, the Redis side :mod:`spendgate.ledger.stream`
and the Postgres side :mod:`spendgate.ledger.writer`; this module is the loop.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from loguru import logger
from redis.asyncio import Redis

from spendgate.config import BudgetConfig
from spendgate.core.shards import check_layout, keys_for
from spendgate.errors import LedgerUnavailableError
from spendgate.ledger.entries import (
    STAGING_COLUMNS,
    clean_text,
    entry_to_row,
    raw_row,
)
from spendgate.ledger.heartbeat import DEFAULT_HEARTBEAT_SECONDS, Heartbeat
from spendgate.ledger.homes import (
    beating,
    close_all,
    consumers_for,
    ensure_groups,
    total_backlog,
)
from spendgate.ledger.mover import BatchMover
from spendgate.ledger.pg import is_unavailable, require_dsn
from spendgate.ledger.stream import REDIS_UNAVAILABLE, Backlog, StreamConsumer
from spendgate.ledger.writer import LedgerWriter

__all__ = [
    "DEFAULT_GROUP",
    "STAGING_COLUMNS",
    "Backlog",
    "Flusher",
    "clean_text",
    "entry_to_row",
    "raw_row",
]

#: the consumer group every flusher of a deployment joins
DEFAULT_GROUP = "spendgate-flusher"


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


def _default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


class Flusher(BatchMover):
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
    :param consumer: this flusher's consumer name, unique per running flusher
        (a stable name, e.g. the pod's, is the one to give); a restarted
        flusher that reuses its name picks up what it had been given before
        at once. Defaults to ``<host>-<pid>-<random>``
    :param heartbeat_seconds: the TTL of this flusher's heartbeat key,
        renewed every third of it while it works; once another flusher's
        heartbeat has expired (it was killed or stopped), its pending entries
        are claimed by the next pass at once. Default 10 s
    :param claim_idle_seconds: entries pending this long on another consumer
        are claimed even though its heartbeat lives (or it never had one: a
        flusher of an older version); defaults to 60 s, well above the time a
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
        heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS,
        claim_idle_seconds: float = 60.0,
        max_backoff_seconds: float = 30.0,
        auto_migrate: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.config = config if config is not None else BudgetConfig()
        self.dsn = require_dsn(dsn or self.config.postgres_dsn)
        #: the deployment's keys: the root's (price books), and its homes
        self.keys = keys_for(self.config.key_prefix, self.config.cluster_buckets)
        self.stream = self.keys.ledger
        self.group = group
        self.consumer = consumer or _default_consumer()
        self.batch_size = self.config.flush_batch_size
        self.interval_seconds = self.config.flush_interval_seconds
        self.claim_idle_ms = max(1, int(claim_idle_seconds * 1000))
        self.max_backoff_seconds = max_backoff_seconds
        self.auto_migrate = auto_migrate
        #: the last price book version copied into Postgres by this flusher
        self._price_books_mirrored = 0
        self._layout_checked = False
        first = StreamConsumer(
            self.config.redis_url,
            redis,
            keys=self.keys,
            group=group,
            consumer=self.consumer,
            batch_size=self.batch_size,
            claim_idle_ms=self.claim_idle_ms,
            cluster=self.config.redis_cluster,
        )
        super().__init__(
            consumers_for(first, self.keys.stream_homes()),
            LedgerWriter(self.dsn, auto_migrate=auto_migrate),
            progress=progress,
        )
        #: where entries Postgres refuses as data are moved, with the error
        #: (the root's; sharded, each home's reader has its own, beside its
        #: ledger stream)
        self.dead_letter_stream = self.reader.dead_letter_stream
        self._wake = asyncio.Event()
        self._stopping = False
        #: failed attempts in a row (0 while healthy)
        self.consecutive_failures = 0
        #: the last failure, as text; ``None`` after a success
        self.last_error: str | None = None
        #: the backlog measured at the last failure (logged with it)
        self.last_backlog: Backlog | None = None
        #: this flusher's heartbeat key (one per home), renewed while it runs
        self.heartbeat = Heartbeat(
            beating(self.readers), heartbeat_seconds, self._status
        )

    # -- connections ---------------------------------------------------------

    @property
    def redis(self) -> Redis:
        """The Redis client, connected on first use."""
        return self.reader.redis

    @property
    def _conn(self) -> Any:
        # The Postgres connection (None when closed), as before the split.
        return self.writer.conn

    async def _ensure_group(self) -> None:
        await ensure_groups(self.readers)

    async def connect(self) -> None:
        """Connect to both stores now (creating the consumer group, and
        applying migrations when ``auto_migrate``), rather than on first need.
        Postgres first: a flusher that cannot write (a bad DSN, Postgres
        down) leaves nothing behind in Redis.

        :raise LedgerUnavailableError: Postgres could not be reached
        :raise ConfigurationError: the DSN is not one
        """
        await self.writer.connection()
        await ensure_groups(self.readers)

    async def aclose(self) -> None:
        """Close the Postgres connection and the Redis client (if it was ours)."""
        await self.heartbeat.stop(end=False)
        await self.writer.aclose()
        await close_all(self.readers)

    async def __aenter__(self) -> Flusher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the loop ------------------------------------------------------------------

    async def run_once(self) -> int:
        """Move what the stream holds now; return how many entries were moved.

        First the entries this consumer was given and never acknowledged,
        then those of flushers whose heartbeat expired, then those idle on
        other consumers for ``claim_idle_seconds``, then new ones up to the
        stream's end as of the call (entries added meanwhile wait for the
        next pass); sharded, every stream home's in turn. The heartbeat is
        kept during the pass.

        :raise LedgerUnavailableError: Postgres could not be reached; nothing
            of the failed batch was acknowledged
        :raise ConfigurationError: (the first pass) the keys are laid out for
            another ``cluster_buckets``: it would not read every bucket
        """
        if not self._layout_checked:
            await check_layout(
                self.redis, self.config.key_prefix, self.config.cluster_buckets
            )
            self._layout_checked = True
        async with self.heartbeat.kept():
            moved = await super().run_once()
            await self._mirror_price_books()
            return moved

    async def _mirror_price_books(self) -> None:
        """Copy newly published price book versions into Postgres."""
        from spendgate.ledger.pricebooks import mirror_price_books

        try:
            self._price_books_mirrored = await mirror_price_books(
                self.redis,
                await self.writer.connection(),
                self.keys,
                self._price_books_mirrored,
            )
        except Exception as exc:
            if is_unavailable(exc):
                self.writer.drop()
                raise LedgerUnavailableError(
                    f"Postgres failed mirroring price books: {exc}"
                ) from exc
            raise

    def _status(self) -> str:
        """The heartbeat's text, for an operator reading the key."""
        return (
            f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} moved={self.moved_total}"
            f" inserted={self.inserted_total} dead_lettered={self.dead_lettered_total}"
            f" failures={self.consecutive_failures}"
        )

    async def run(self) -> None:
        """Flush every ``flush_interval_seconds`` until cancelled or :meth:`stop`.

        A full batch is followed at once by the next, so a backlog drains at
        full speed. While Postgres (or Redis) is down it retries with
        exponential backoff up to ``max_backoff_seconds``, logging the
        backlog each time; nothing is acknowledged meanwhile. Closes the
        connections when it ends.
        """
        try:
            await self.heartbeat.start()
            while not self._stopping:
                _honour_lost_cancel()
                try:
                    moved = await self.run_once()
                except (LedgerUnavailableError, *REDIS_UNAVAILABLE) as exc:
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
            await self.heartbeat.stop()
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
        and the age of the oldest (by the Redis clock); sharded, summed over
        every home's stream (the age: the oldest of any)."""
        return await total_backlog(self.readers)

    async def flush(self) -> int:
        """Move everything there is, including what arrives meanwhile, until a
        pass finds nothing; for tests and shutdown. Returns the count moved."""
        total = 0
        while True:
            moved = await self.run_once()
            total += moved
            if not moved:
                return total
