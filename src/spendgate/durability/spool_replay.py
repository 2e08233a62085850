"""Replaying the spool: records into Redis, and the segments dead processes left.

:class:`RecordReplayer` sends the records of one segment through the
manager's replay function, in order, and keeps the tallies; a fact Redis
refuses for good goes to ``dead.log``. :class:`Leftovers` finds the segments
of other processes on this host, claims those whose writer is gone (its
``flock`` is free), replays and deletes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from loguru import logger

from spendgate.durability import spool_files as files
from spendgate.durability.spool_records import SpooledFact, decode_fact

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
        #: corrupt lines skipped
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
                await self._apply(apply, line)
                offset = at + len(line)
                on_progress(offset)
        return offset

    async def _apply(self, apply: ReplayFn, line: bytes) -> None:
        fact = decode_fact(line)
        if fact is None:
            self.corrupt_lines += 1
            logger.error(
                "spendgate: skipped a corrupt spool record in {}", self.directory
            )
            return
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


class Leftovers:
    """The segments other processes of this host wrote, as of the last scan."""

    def __init__(self, directory: Path, records: RecordReplayer) -> None:
        self.directory = directory
        self._records = records
        #: records in them not replayed yet
        self.depth = 0
        #: creation time of the oldest of them, ms since the epoch
        self.oldest_ms: int | None = None

    def scan(self, own: str | None) -> list[Path]:
        """Segments other than ``own`` (a name), in creation order; refreshes
        :attr:`depth` and :attr:`oldest_ms`."""
        try:
            names = sorted(os.listdir(self.directory))
        except OSError:  # no folder yet (or an unusable one: appends will say)
            self.depth, self.oldest_ms = 0, None
            return []
        found: list[Path] = []
        depth = 0
        oldest: int | None = None
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
                    reader.seek(files.read_progress(files.progress_path(path)))
                    depth += reader.read().count(b"\n")
            except OSError:
                continue
            created = files.segment_created_ms(name)
            if created is not None:
                oldest = created if oldest is None else min(oldest, created)
        self.depth, self.oldest_ms = depth, oldest
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
        start = files.read_progress(progress)
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
        logger.info(
            "spendgate: replayed {} spooled facts left by another process ({})",
            reached[1],
            path.name,
        )
