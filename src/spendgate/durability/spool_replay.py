"""Replaying the spool: records into Redis, and the segments dead processes left.

:class:`RecordReplayer` sends the records of one segment through the
manager's replay function, in order, and keeps the tallies; a fact Redis
refuses for good goes to ``dead.log``, a record that cannot be read (a
flipped byte, a torn last line) to ``quarantine.log``, with its raw bytes,
its segment and byte offset: a segment is deleted once replayed, so nothing
leaves it without a trace. :class:`Leftovers` finds the segments of other
processes on this host, claims those whose writer is gone (its ``flock`` is
free), replays and deletes them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from loguru import logger

from spendgate.durability import spool_files as files
from spendgate.durability.spool_records import (
    CorruptRecordError,
    SpooledFact,
    read_fact,
)

#: replays one fact: returns ``None`` once it is applied (or was already),
#: a reason when Redis refused it for good (it then goes to the dead letters);
#: raises when the store cannot be reached (the pass stops, to resume later)
ReplayFn = Callable[[SpooledFact], Awaitable[str | None]]

#: records replayed between two writes of the progress hint
PROGRESS_EVERY = 500


class RecordReplayer:
    """Replays the records of segments, and counts what became of them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        #: facts replayed into Redis (applied or found applied)
        self.replayed_total = 0
        #: facts Redis refused for good on replay (see ``dead.log``)
        self.dead_letters = 0
        #: records moved to ``quarantine.log``: corrupt lines and torn tails
        self.quarantined = 0
        #: of those, the complete lines that held no readable fact
        self.corrupt_lines = 0

    async def replay_lines(
        self,
        apply: ReplayFn,
        path: Path,
        start: int,
        end: int | None,
        on_progress: Callable[[int], None],
    ) -> int:
        """Replay the complete lines of ``path`` from byte ``start`` (to ``end``).

        Calls ``on_progress(offset)`` after each record; returns the offset
        reached. Exceptions of ``apply`` propagate (progress is kept).
        """
        offset = start
        lines = files.complete_lines(path, start, end)
        async with contextlib.aclosing(lines):
            async for at, line in lines:
                if not line.endswith(b"\n"):
                    await self._quarantine(path, at, line, "torn last line")
                else:
                    try:
                        fact = read_fact(line)
                    except CorruptRecordError as exc:
                        self.corrupt_lines += 1
                        await self._quarantine(path, at, line, str(exc))
                    else:
                        await self._apply(apply, fact, line)
                offset = at + len(line)
                on_progress(offset)
        return offset

    async def _apply(self, apply: ReplayFn, fact: SpooledFact, line: bytes) -> None:
        reason = await apply(fact)
        if reason is None:
            self.replayed_total += 1
            return
        self.dead_letters += 1
        record = json.dumps({"reason": reason, "record": line.decode().rstrip("\n")})
        await asyncio.to_thread(
            files.append_line,
            self.directory / files.DEAD_LETTERS,
            record.encode() + b"\n",
        )
        logger.error(
            "spendgate: Redis refused a spooled fact for good ({}): {}; kept in {}",
            reason,
            {k: v for k, v in fact.info.items() if k != "metadata"},
            self.directory / files.DEAD_LETTERS,
        )

    async def _quarantine(
        self, segment: Path, offset: int, raw: bytes, reason: str
    ) -> None:
        """Keep a record that cannot be read, exactly as it is, with where it
        was; it is not replayed (nothing says what it was)."""
        where = self.directory / files.QUARANTINE
        entry = {
            "reason": reason,
            "segment": segment.name,
            "offset": offset,
            "length": len(raw),
            "raw": base64.b64encode(raw).decode(),
            "text": raw.decode("utf-8", "backslashreplace"),
            "quarantined_ms": files.now_ms(),
        }
        line = json.dumps(entry).encode() + b"\n"
        await asyncio.to_thread(files.append_line, where, line)
        self.quarantined += 1
        # A torn tail is what a crash mid-write leaves (never acknowledged);
        # anything else is damage.
        log = logger.warning if reason == "torn last line" else logger.error
        log(
            "spendgate: quarantined an unreadable spool record ({}): {} at byte {},"
            " {} bytes, kept in {}; it was not replayed",
            reason,
            segment.name,
            offset,
            len(raw),
            where,
        )


class Leftovers:
    """The segments other processes of this host wrote, as of the last scan."""

    def __init__(self, directory: Path, records: RecordReplayer) -> None:
        self.directory = directory
        self._records = records
        #: records in them not replayed yet
        self.depth = 0
        # Creation time (ms) of each of them holding records not replayed yet.
        self._waiting: dict[str, int] = {}

    @property
    def oldest_ms(self) -> int | None:
        """Creation time of the oldest segment still waiting, ms since the
        epoch; ``None`` when none is (no age without depth)."""
        return min(self._waiting.values(), default=None) if self.depth else None

    def adopt(self, name: str, records: int, created_ms: int) -> None:
        """Count a segment of this process's that it gave up writing: it is
        replayed as a leftover."""
        self.depth += records
        if records:
            self._waiting[name] = created_ms

    def scan(self, own: str | None) -> list[Path]:
        """Segments other than ``own`` (a name), in creation order; refreshes
        :attr:`depth` and :attr:`oldest_ms`."""
        try:
            names = sorted(os.listdir(self.directory))
        except OSError:  # no folder yet (or an unusable one: appends will say)
            self.depth, self._waiting = 0, {}
            return []
        found: list[Path] = []
        depth = 0
        waiting: dict[str, int] = {}
        for name in names:
            path = self.directory / name
            if name.startswith(".") and name.endswith(".new"):
                files.drop_stale_hidden(path)
                continue
            if not files.is_segment(name) or name == own:
                continue
            found.append(path)
            try:
                with open(path, "rb") as reader:
                    reader.seek(files.replay_start(path)[0])
                    records = reader.read().count(b"\n")
            except OSError:
                continue
            depth += records
            created = files.segment_created_ms(name)
            if records and created is not None:
                waiting[name] = created
        self.depth, self._waiting = depth, waiting
        return found

    async def replay(self, apply: ReplayFn, own: str | None) -> None:
        """Replay, in order, every segment whose writer is gone, and delete it."""
        for path in await asyncio.to_thread(self.scan, own):
            fd = files.claim(path)
            if fd is None:
                continue  # its writer is alive (it replays it), or another claimer
            try:
                await self._replay_claimed(apply, path)
            finally:
                os.close(fd)

    async def _replay_claimed(self, apply: ReplayFn, path: Path) -> None:
        progress = files.progress_path(path)
        start, unsound = files.replay_start(path)
        if unsound is not None:
            logger.warning(
                "spendgate: ignored the progress hint of {} ({}): replaying it"
                " from the start (replays are idempotent)",
                path.name,
                unsound,
            )
        reached = [start, 0]  # offset, records

        def advanced(offset: int) -> None:
            self.depth = max(0, self.depth - 1)
            reached[0] = offset
            reached[1] += 1
            if reached[1] % PROGRESS_EVERY == 0:
                files.write_progress(progress, offset)

        try:
            await self._records.replay_lines(apply, path, start, None, advanced)
        except BaseException:
            if reached[1]:
                files.write_progress(progress, reached[0])
            raise
        for stale in (path, progress):
            with contextlib.suppress(OSError):
                os.unlink(stale)
        self._waiting.pop(path.name, None)
        logger.info(
            "spendgate: replayed {} spooled records left by another process ({})",
            reached[1],
            path.name,
        )
