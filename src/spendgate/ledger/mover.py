"""One pass of the flusher: batches from the stream into Postgres, exactly once.

A pass moves this consumer's own unacknowledged entries first (a batch whose
insert or ack failed), then those of flushers whose heartbeat expired, then
entries idle on other consumers for the claim-idle time, then new ones up to
the stream's end as of the pass. Each batch is committed in Postgres
before it is acknowledged and deleted in Redis, so a crash anywhere leaves it
pending, to be read again; the insert ignores rows already there. While the
event dispatcher reads the stream too, an entry is deleted only once both
have acknowledged it (``stream_ack.lua``); a pass that moves nothing sweeps
what the dispatcher acknowledged since.

A sharded deployment has a ledger stream per stream home (the root's and
each bucket's, :mod:`spendgate.ledger.homes`): a pass moves each home in
turn, as one consumer of each home's group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from loguru import logger
from redis import exceptions as redis_errors

from spendgate.errors import LedgerUnavailableError, PoisonEntryError
from spendgate.ledger.entries import RawFields, StreamEntry, raw_row
from spendgate.ledger.pg import is_unavailable
from spendgate.ledger.stream import StreamConsumer, id_tuple
from spendgate.ledger.writer import LedgerWriter


class _Prepared(NamedTuple):
    """A batch read from the stream, converted, not stored yet."""

    #: every stream id of the batch (acknowledged together)
    ids: list[str]
    #: staging rows, and the entries they came from
    rows: list[tuple[Any, ...]]
    sources: list[tuple[str, RawFields]]
    #: entries that cannot become rows, with the reason
    dead: list[tuple[str, RawFields, str]]


def _prepare(batch: list[StreamEntry]) -> _Prepared:
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


async def _abandon(task: asyncio.Task[int]) -> None:
    """Cancel a store still running (its entries stay pending, to be read
    again) and collect its outcome, so no error goes unretrieved."""
    task.cancel()
    try:
        await task
    except BaseException:
        pass


class BatchMover:
    """Moves batches from stream consumers into the ledger table, one pass
    at a time (:meth:`run_once`), and counts what it moved.

    :param readers: the Redis side, this consumer of each stream home's
        group (one, unsharded)
    :param writer: the Postgres side
    :param progress: called with the running count of moved entries after
        every batch of :meth:`run_once`
    """

    def __init__(
        self,
        readers: Sequence[StreamConsumer],
        writer: LedgerWriter,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        #: the Redis side: this flusher as a consumer of each home's group
        self.readers = tuple(readers)
        #: the first home's (the root's): the only one unsharded
        self.reader = self.readers[0]
        #: the Postgres side
        self.writer = writer
        self.progress = progress
        #: entries moved (inserted or found already there, then acknowledged)
        self.moved_total = 0
        #: rows actually inserted (moved minus duplicates of a redelivery)
        self.inserted_total = 0
        #: entries moved to the dead-letter stream
        self.dead_lettered_total = 0
        #: entries the pass in progress moved from the homes before this one
        self._before = 0

    # -- one pass --------------------------------------------------------------

    async def run_once(self) -> int:
        """Move what the stream holds now; return how many entries were moved.

        First the entries this consumer was given and never acknowledged,
        then those of dead consumers, then new ones up to the stream's end as
        of the call (entries added meanwhile wait for the next pass); each
        stream home in turn.

        :raise LedgerUnavailableError: Postgres could not be reached; nothing
            of the failed batch was acknowledged
        """
        self._before = 0
        for reader in self.readers:
            self._before += await self._home_once(reader)
        return self._before

    async def _home_once(self, reader: StreamConsumer) -> int:
        """One home's part of :meth:`run_once`."""
        try:
            return await self._pass(reader)
        except LedgerUnavailableError:
            raise
        except redis_errors.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # The stream (and its group) was deleted under us: the group is
            # created again by the next pass.
            reader.group_lost()
            return 0
        except Exception as exc:
            if is_unavailable(exc):
                self.writer.drop()
                raise LedgerUnavailableError(
                    f"Postgres failed mid-flush: {type(exc).__name__}: {exc}"
                ) from exc
            raise

    async def _pass(self, reader: StreamConsumer) -> int:
        await reader.ensure_group()
        moved = 0
        # Our own unacknowledged entries: a batch whose insert or ack failed.
        while True:
            batch = await reader.read("0")
            if not batch:
                break
            moved += await self._move(reader, batch)
            self._report(moved)
        moved += await self._claim_dead(reader, moved)
        moved += await self._reclaim(reader, moved)
        end = await reader.last_id()
        # New entries, up to the end as of now. Each batch is stored (Postgres,
        # then the ack) while the next one is read and converted, so Redis,
        # Postgres and this process work at the same time; batches are still
        # acknowledged one by one, each only after its own commit.
        storing: asyncio.Task[int] | None = None
        try:
            while end is not None:
                batch = await reader.read(">")
                prepared = _prepare(batch)
                if storing is not None:
                    moved += await storing
                    storing = None
                    self._report(moved)
                if not batch:
                    break
                if len(batch) < reader.batch_size or id_tuple(batch[-1][0]) >= end:
                    moved += await self._store(reader, prepared)
                    self._report(moved)
                    break
                storing = asyncio.create_task(self._store(reader, prepared))
        finally:
            if storing is not None:
                await _abandon(storing)
        if not moved and reader.shared is not False:
            # Entries kept for another group (the event dispatcher's) that it
            # has acknowledged since: deleted now, not with the next batch.
            await reader.sweep()
        return moved

    def _report(self, moved: int) -> None:
        """Report the pass's running count (``moved`` in the home being
        moved, after those moved from the homes before it)."""
        if self.progress is not None:
            self.progress(self._before + moved)

    async def _claim_dead(self, reader: StreamConsumer, moved: int) -> int:
        """Claim and move the entries of flushers whose heartbeat expired."""
        claimed_moved = 0
        for dead in await reader.dead_consumers():
            # Bounded: a page at a time of what it held when it died.
            for _ in range(1000):
                held, batch = await reader.claim_dead(dead)
                if batch:
                    logger.info(
                        "spendgate flusher {}: claimed {} entries of flusher {}, "
                        "whose heartbeat expired",
                        reader.consumer,
                        len(batch),
                        dead,
                    )
                    claimed_moved += await self._move(reader, batch)
                    self._report(moved + claimed_moved)
                if held <= 0:
                    break
        return claimed_moved

    async def _reclaim(self, reader: StreamConsumer, moved: int) -> int:
        """Claim and move entries idle on other consumers (dead flushers)."""
        start = "0-0"
        claimed_moved = 0
        # Bounded: one sweep over the pending list per pass.
        for _ in range(1000):
            start, batch = await reader.claim(start)
            if batch:
                logger.info(
                    "spendgate flusher {}: reclaimed {} entries from idle consumers",
                    reader.consumer,
                    len(batch),
                )
                claimed_moved += await self._move(reader, batch)
                self._report(moved + claimed_moved)
            if start == "0-0":
                break
        if claimed_moved:
            await reader.forget_idle_consumers()
        return claimed_moved

    async def _move(self, reader: StreamConsumer, batch: list[StreamEntry]) -> int:
        """Insert one batch, commit, then acknowledge and delete it."""
        return await self._store(reader, _prepare(batch))

    async def _store(self, reader: StreamConsumer, prepared: _Prepared) -> int:
        """Insert and commit the rows, dead-letter what Postgres refuses, then
        acknowledge and delete the whole batch."""
        rows, sources, dead = prepared.rows, prepared.sources, prepared.dead
        if rows:
            inserted, refused = await self.writer.insert(rows, sources)
            self.inserted_total += inserted
            dead.extend((*sources[index], error) for index, error in refused)
        if dead:
            await self._dead_letter(reader, dead)
        # Acknowledged and deleted in one atomic script, only now that the
        # rows are committed.
        await reader.ack(prepared.ids)
        self.moved_total += len(prepared.ids)
        return len(prepared.ids)

    async def _dead_letter(
        self, reader: StreamConsumer, dead: list[tuple[str, RawFields, str]]
    ) -> None:
        for sid, _fields, error in dead:
            logger.error(
                "spendgate flusher: ledger entry {} cannot be stored in Postgres, "
                "moved to {}: {}",
                sid,
                reader.dead_letter_stream,
                error,
            )
        await reader.dead_letter(dead)
        self.dead_lettered_total += len(dead)
