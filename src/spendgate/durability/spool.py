"""The durable local spool: facts that could not reach Redis wait here.

A fact (``record_spend``, ``settle``, ``add_credits``) describes money that was
already spent, so it may never be lost. When Redis cannot be reached (or the
circuit breaker is open) the manager appends the fact's *exact* call — its
operation and arguments by name, the entry id and idempotency key included —
to this spool and answers ``spooled=True``. Replaying that call later is
bit-identical to the first attempt (the keys follow from the arguments), and
every fact carries an idempotency key (the caller's, or one generated from its
entry id; a settle is keyed by its lease), so a fact that did reach Redis
before the connection broke is answered ``REPLAYED`` and counted once.

On disk (one directory per deployment, under ``spool_path``)::

    seg-<created_ms>-<pid>-<random>.log        records, one per line, append-only
    seg-<created_ms>-<pid>-<random>.log.done   byte offset replayed so far (a hint)
    dead.log                                   facts Redis refused on replay
    quarantine.log                             records that could not be read

- Each process writes its own segment and holds an exclusive ``flock`` on it
  for as long as it lives, so several processes on one host never interleave
  writes, and no process replays a segment whose writer is alive.
- A segment is created under a hidden name, locked, then renamed: nobody can
  claim it in between.
- Appends are group-committed: concurrent facts are written together and made
  durable by one ``fsync`` (in a worker thread, so the event loop never
  blocks) before any of their callers is answered.
- Each line is ``<crc32 hex> <json>`` (:mod:`.spool_records`: the format and
  the older versions it still reads). A line that cannot be read (a flipped
  byte; a torn last line: the process died mid-write, before its caller was
  answered) is not replayed but quarantined: kept byte for byte in
  ``quarantine.log`` with its segment and offset, logged, and counted.
- A segment left by a dead process is claimed with a non-blocking ``flock``
  by whichever process replays next, replayed in order, then deleted. The
  ``.done`` file only saves work: it is written after the records it covers
  were applied, so it never runs ahead of the truth, and replaying from an
  older offset is harmless (idempotent). A hint that does not land on a
  record boundary inside the file is ignored: a damaged hint never skips a
  fact.
- The spool is bounded (``spool_max_entries``, counted over the directory):
  when full, the fact raises :class:`~spendgate.errors.SpoolFullError` rather
  than being dropped.

Exactly-once holds as long as a fact is replayed within
``idempotency_ttl_seconds`` of being spooled (the idempotency record of a
generated key, and a settled lease's record, live that long in Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loguru import logger

from spendgate.durability import spool_files as files
from spendgate.durability.spool_files import spool_directory
from spendgate.durability.spool_records import (
    RECORD_VERSION,
    CorruptRecordError,
    SpooledFact,
    decode_fact,
    encode_fact,
    read_fact,
)
from spendgate.durability.spool_replay import (
    PROGRESS_EVERY,
    Leftovers,
    RecordReplayer,
    ReplayFn,
)
from spendgate.errors import SpoolFullError

__all__ = [
    "RECORD_VERSION",
    "CorruptRecordError",
    "ReplayFn",
    "Spool",
    "SpooledFact",
    "decode_fact",
    "encode_fact",
    "read_fact",
    "spool_directory",
]


class Spool:
    """The spool of one deployment on this host (one folder).

    :param directory: the deployment's folder (see :func:`spool_directory`);
        created on first use, mode 0700
    :param max_entries: the most facts the folder may hold; past it
        :meth:`append` raises :class:`SpoolFullError`
    """

    def __init__(self, directory: Path, max_entries: int) -> None:
        self.directory = directory
        self.max_entries = max_entries
        # The active segment this process writes: fd (holding the flock), path,
        # bytes made durable, bytes replayed, and the spool time of each
        # record not replayed yet (for the depth and age metrics).
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self._replayed = 0
        self._pending_ms: deque[int] = deque()
        # Facts waiting for the next group commit, and the batch being written.
        self._queue: list[tuple[bytes, int, asyncio.Future[None]]] = []
        self._inflight = 0
        self._writer: asyncio.Task[None] | None = None
        self._lock: asyncio.Lock | None = None
        # Replaying: the records (and their tallies), and the segments of
        # other processes, as of the last scan.
        self._records = RecordReplayer(directory)
        self._leftovers = Leftovers(directory, self._records)
        self._closed = False
        #: called (no arguments) after facts were made durable: wakes the replayer
        self.on_append: Callable[[], None] | None = None
        #: facts this process spooled
        self.spooled_total = 0

    # -- metrics ---------------------------------------------------------------

    @property
    def replayed_total(self) -> int:
        """Facts this process replayed into Redis (applied or found applied)."""
        return self._records.replayed_total

    @property
    def dead_letters(self) -> int:
        """Facts Redis refused for good on replay (see ``dead.log``)."""
        return self._records.dead_letters

    @property
    def quarantined(self) -> int:
        """Records that could not be read, moved to ``quarantine.log``
        (corrupt lines and torn tails)."""
        return self._records.quarantined

    @property
    def corrupt_lines(self) -> int:
        """Quarantined complete lines that held no readable fact."""
        return self._records.corrupt_lines

    @property
    def depth(self) -> int:
        """Facts in the spool not replayed yet: this process's, plus those of
        other processes' segments as of the last scan."""
        return len(self._pending_ms) + self._leftovers.depth

    @property
    def own_depth(self) -> int:
        """Facts this process spooled (or is spooling) and not replayed yet."""
        return len(self._pending_ms) + len(self._queue) + self._inflight

    def __len__(self) -> int:
        return self.depth

    def __bool__(self) -> bool:
        # A spool is a spool even when empty: ``if budget.spool:`` must not
        # depend on its depth.
        return True

    @property
    def oldest_age_seconds(self) -> float | None:
        """Age of the oldest fact waiting, in seconds; ``None`` when empty
        (at depth 0 there is no age, whatever was replayed before)."""
        oldest = [ms for ms in (self._own_oldest_ms(), self._leftovers.oldest_ms) if ms]
        if not oldest:
            return None
        return max(0.0, (files.now_ms() - min(oldest)) / 1000)

    def _own_oldest_ms(self) -> int | None:
        return self._pending_ms[0] if self._pending_ms else None

    def stats(self) -> dict[str, Any]:
        """The metrics, as ``budget.spool.<name>`` would be named."""
        return {
            "depth": self.depth,
            "oldest_age_seconds": self.oldest_age_seconds,
            "spooled_total": self.spooled_total,
            "replayed_total": self.replayed_total,
            "dead_letters": self.dead_letters,
            "quarantined": self.quarantined,
            "corrupt_lines": self.corrupt_lines,
        }

    # -- writing -------------------------------------------------------------------

    async def append(self, fact: SpooledFact) -> None:
        """Make ``fact`` durable (written and fsynced) before returning.

        :raise SpoolFullError: when the spool holds ``max_entries`` facts, or
            cannot be written (disk full, permissions)
        """
        if self._closed:
            raise SpoolFullError("the spool is closed")
        line = encode_fact(fact)
        if self.depth + len(self._queue) + self._inflight >= self.max_entries:
            raise SpoolFullError(
                f"the spool at {self.directory} holds {self.depth} facts, its "
                f"limit (spool_max_entries={self.max_entries}); the fact was not "
                "recorded"
            )
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._queue.append((line, fact.created_ms, done))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._commit_queue())
        # Shielded: a caller that gives up must not leave a half-made record.
        await asyncio.shield(done)

    def _io_lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def _commit_queue(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            self._inflight = len(batch)
            try:
                async with self._io_lock():
                    await asyncio.to_thread(self._write_batch, [b[0] for b in batch])
            except OSError as exc:
                logger.error(
                    "spendgate: could not write the spool at {}: {}",
                    self.directory,
                    exc,
                )
                for _, _, done in batch:
                    if not done.done():
                        done.set_exception(
                            SpoolFullError(
                                f"the spool at {self.directory} could not be written "
                                f"({exc.strerror or exc}); the fact was not recorded"
                            )
                        )
                continue
            finally:
                self._inflight = 0
            first = not self._pending_ms
            for _, created_ms, done in batch:
                self._pending_ms.append(created_ms)
                if not done.done():
                    done.set_result(None)
            self.spooled_total += len(batch)
            if first:
                logger.warning(
                    "spendgate: spooling facts to {} until the store answers",
                    self.directory,
                )
            if self.on_append is not None:
                self.on_append()

    def _write_batch(self, lines: list[bytes]) -> None:
        """Append and fsync (runs in a worker thread, under the io lock)."""
        if self._fd is None:
            self._open_segment()
        assert self._fd is not None
        data = b"".join(lines)
        start = self._size
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
        except OSError:
            # Cut a partial write off, so the next record starts on a clean
            # line; if even that fails, abandon the segment (its torn tail
            # fails the CRC check) and start a new one next time.
            try:
                os.ftruncate(self._fd, start)
            except OSError:
                self._abandon_segment()
            raise
        self._size = start + len(data)

    def _open_segment(self) -> None:
        fd, path = files.create_segment(self.directory)
        self._fd, self._path, self._size, self._replayed = fd, path, 0, 0

    def _abandon_segment(self) -> None:
        # The segment stays on disk; once this process ends (or right now,
        # since the lock is dropped) another replayer claims what it holds.
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        if self._path is not None and self._pending_ms:
            oldest = self._pending_ms[0]
            self._leftovers.adopt(self._path.name, len(self._pending_ms), oldest)
        self._fd, self._path, self._size, self._replayed = None, None, 0, 0
        self._pending_ms.clear()

    # -- replaying --------------------------------------------------------------------

    def has_leftovers(self) -> bool:
        """Are there segments this process did not write (left by a crash)?

        Also refreshes :attr:`depth` with what they hold.
        """
        return bool(self._leftovers.scan(self._own_name()))

    async def replay(self, apply: ReplayFn) -> bool:
        """One pass: replay, in order, the segments of dead processes, then
        this process's own.

        :return: ``True`` when everything claimable was replayed; ``False``
            when ``apply`` raised (the store went away): the rest waits for the
            next pass
        """
        try:
            if not self._closed:
                await self._leftovers.replay(apply, self._own_name())
            return await self._replay_own(apply)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.debug(
                "spendgate: spool replay paused: {}: {}", type(exc).__name__, exc
            )
            return False

    def _own_name(self) -> str | None:
        return self._path.name if self._path is not None else None

    async def _replay_own(self, apply: ReplayFn) -> bool:
        path = self._path
        if path is None:
            return True
        progress = files.progress_path(path)
        count = 0

        def advanced(offset: int) -> None:
            nonlocal count
            self._replayed = offset
            if self._pending_ms:
                self._pending_ms.popleft()
            count += 1
            if count % PROGRESS_EVERY == 0:
                files.write_progress(progress, offset)

        try:
            await self._records.replay_lines(
                apply, path, self._replayed, self._size, advanced
            )
        finally:
            if count:
                files.write_progress(progress, self._replayed)
        async with self._io_lock():
            # Drained: drop the segment; the next fact starts a fresh one.
            if self._path == path and self._replayed >= self._size:
                fd, self._fd = self._fd, None
                self._path, self._size, self._replayed = None, 0, 0
                self._pending_ms.clear()
                for stale in (path, progress):
                    with contextlib.suppress(OSError):
                        os.unlink(stale)
                if fd is not None:
                    os.close(fd)
        return True

    async def aclose(self) -> None:
        """Finish pending writes and drop the segment lock (the file stays:
        the next process replays what is left)."""
        if self._closed:
            return
        writer = self._writer
        if writer is not None and not writer.done():
            with contextlib.suppress(Exception):
                await writer
        self._closed = True
        async with self._io_lock():
            if self._fd is not None:
                if self._replayed:
                    assert self._path is not None
                    files.write_progress(
                        files.progress_path(self._path), self._replayed
                    )
                os.close(self._fd)
                self._fd = None
        if self.depth:
            logger.warning(
                "spendgate: {} spooled facts wait in {} for the next process",
                self.depth,
                self.directory,
            )
