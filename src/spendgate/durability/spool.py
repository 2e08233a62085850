"""The durable local spool: facts that could not reach Redis wait here.

A fact (``record_spend``, ``settle``, ``add_credits``) describes money that was
already spent, so it may never be lost. When Redis cannot be reached (or the
circuit breaker is open) the manager appends the fact's *exact* script call —
script name, KEYS and ARGV, the entry id and idempotency key included — to this
spool and answers ``spooled=True``. Replaying that call later is bit-identical
to the first attempt, and every fact carries an idempotency key (the caller's,
or one generated from its entry id; a settle is keyed by its lease), so a fact
that did reach Redis before the connection broke is answered ``REPLAYED`` and
counted once.

On disk (one directory per deployment, under ``spool_path``)::

    seg-<created_ms>-<pid>-<random>.log        records, one per line, append-only
    seg-<created_ms>-<pid>-<random>.log.done   byte offset replayed so far (a hint)
    dead.log                                   facts Redis refused on replay

- Each process writes its own segment and holds an exclusive ``flock`` on it
  for as long as it lives, so several processes on one host never interleave
  writes, and no process replays a segment whose writer is alive.
- A segment is created under a hidden name, locked, then renamed: nobody can
  claim it in between.
- Appends are group-committed: concurrent facts are written together and made
  durable by one ``fsync`` (in a worker thread, so the event loop never
  blocks) before any of their callers is answered.
- Each line is ``<crc32 hex> <json>``; a torn last line (the process died
  mid-write, before its caller was answered) fails the check and is skipped.
- A segment left by a dead process is claimed with a non-blocking ``flock``
  by whichever process replays next, replayed in order, then deleted. The
  ``.done`` file only saves work: it is written after the records it covers
  were applied, so it never runs ahead of the truth, and replaying from an
  older offset is harmless (idempotent).
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
import fcntl
import hashlib
import json
import os
import time
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from spendgate.errors import SpoolFullError

#: the record format written by this version
RECORD_VERSION = 2

# Version 1 records carried the manager's configuration among a fact's
# arguments; the scripts now hold it as constants. Where it sat (0-based),
# per script, with how many arguments a version 1 record has: dropped on
# reading, so a spool written before the change still replays exactly.
_V1_CONFIGURATION = {
    "lua_record": (17, frozenset({0, 7, 9, 10})),
    "lua_settle": (13, frozenset({0, 7, 8})),
    "lua_credit": (10, frozenset({0, 4, 5})),
}

_SEGMENT_PREFIX = "seg-"
_SEGMENT_SUFFIX = ".log"
_PROGRESS_SUFFIX = ".done"
_DEAD_LETTERS = "dead.log"
# Records replayed between two writes of the progress hint.
_PROGRESS_EVERY = 500
# Bytes of a segment read at once during replay.
_READ_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class SpooledFact:
    """One fact as it waits in the spool: the exact script call, plus context.

    :param script: the script handle's name, e.g. ``"lua_record"``
    :param keys: the script's KEYS, exactly as first sent
    :param args: the script's ARGV, exactly as first sent (``str`` and ``int``)
    :param created_ms: wall-clock time it was spooled, ms since the epoch (for
        the age metric; the fact's own time is inside ``args``)
    :param info: what the fact is (kind, user, amount, entry id), for logs and
        dead letters; never needed to replay it
    """

    script: str
    keys: tuple[str, ...]
    args: tuple[str | int, ...]
    created_ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)
    info: dict[str, Any] = field(default_factory=dict)


#: replays one fact: returns ``None`` once it is applied (or was already),
#: a reason when Redis refused it for good (it then goes to the dead letters);
#: raises when the store cannot be reached (the pass stops, to resume later)
ReplayFn = Callable[[SpooledFact], Awaitable[str | None]]


def encode_fact(fact: SpooledFact) -> bytes:
    """One spool line: ``<crc32 hex> <json>\\n``."""
    for value in fact.args:
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise TypeError(f"spool arguments must be str or int, not {value!r}")
    body = json.dumps(
        {
            "v": RECORD_VERSION,
            "s": fact.script,
            "k": list(fact.keys),
            "a": list(fact.args),
            "t": fact.created_ms,
            "i": fact.info,
        },
        separators=(",", ":"),
        default=str,
    ).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def decode_fact(line: bytes) -> SpooledFact | None:
    """The fact of one spool line; ``None`` when it is torn or corrupt."""
    line = line.rstrip(b"\n")
    if len(line) < 10 or line[8:9] != b" ":
        return None
    body = line[9:]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        data = json.loads(body)
        script, args = str(data["s"]), tuple(data["a"])
        if data.get("v") == 1:
            count, configuration = _V1_CONFIGURATION[script]
            if len(args) != count:
                return None
            args = tuple(a for i, a in enumerate(args) if i not in configuration)
        elif data.get("v") != RECORD_VERSION:
            return None
        return SpooledFact(
            script=script,
            keys=tuple(data["k"]),
            args=args,
            created_ms=int(data["t"]),
            info=dict(data.get("i") or {}),
        )
    except (ValueError, KeyError, TypeError):
        return None


def spool_directory(root: Path, key_prefix: str, store_identity: str) -> Path:
    """The spool folder of one deployment: ``<root>/<key_prefix>-<hash>``.

    Facts of different Redis servers (or key prefixes) never share a folder,
    so a process can only ever replay facts into the store they were meant
    for. ``store_identity`` must not contain secrets; it is hashed anyway.
    """
    digest = hashlib.blake2b(
        f"{store_identity}\x1f{key_prefix}".encode(), digest_size=6
    ).hexdigest()
    safe_prefix = "".join(c if c.isalnum() or c in "_-." else "_" for c in key_prefix)
    return root / f"{safe_prefix}-{digest}"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _read_progress(path: Path) -> int:
    try:
        return max(0, int(path.read_text().strip() or 0))
    except (OSError, ValueError):
        return 0


def _write_progress(path: Path, offset: int) -> None:
    # A hint only (see the module docstring): written atomically, not fsynced.
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(str(offset))
        os.replace(tmp, path)
    except OSError as exc:
        logger.debug("spendgate: could not save spool progress {}: {}", path, exc)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Claim:
    """A foreign segment this process holds the lock of while replaying it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.progress = path.with_name(path.name + _PROGRESS_SUFFIX)


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
        # Segments of other processes, as of the last scan: records and the
        # oldest segment's creation time.
        self._foreign_depth = 0
        self._foreign_oldest_ms: int | None = None
        self._closed = False
        #: called (no arguments) after facts were made durable: wakes the replayer
        self.on_append: Callable[[], None] | None = None
        #: facts this process spooled
        self.spooled_total = 0
        #: facts this process replayed into Redis (applied or found applied)
        self.replayed_total = 0
        #: facts Redis refused for good on replay (see ``dead.log``)
        self.dead_letters = 0
        #: corrupt or torn lines skipped
        self.corrupt_lines = 0

    # -- metrics ---------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Facts in the spool not replayed yet: this process's, plus those of
        other processes' segments as of the last scan."""
        return len(self._pending_ms) + self._foreign_depth

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
        """Age of the oldest fact waiting, in seconds; ``None`` when empty."""
        oldest = [ms for ms in (self._own_oldest_ms(), self._foreign_oldest_ms) if ms]
        if not oldest:
            return None
        return max(0.0, (_now_ms() - min(oldest)) / 1000)

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
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = (
            f"{_SEGMENT_PREFIX}{_now_ms():013d}-{os.getpid()}-"
            f"{os.urandom(4).hex()}{_SEGMENT_SUFFIX}"
        )
        hidden = self.directory / f".{name}.new"
        path = self.directory / name
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        fd = os.open(hidden, flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.rename(hidden, path)
            _fsync_dir(self.directory)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(hidden)
            raise
        self._fd, self._path, self._size, self._replayed = fd, path, 0, 0

    def _abandon_segment(self) -> None:
        # The segment stays on disk; once this process ends (or right now,
        # since the lock is dropped) another replayer claims what it holds.
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd, self._path, self._size, self._replayed = None, None, 0, 0
        self._foreign_depth += len(self._pending_ms)
        self._pending_ms.clear()

    # -- replaying --------------------------------------------------------------------

    def has_leftovers(self) -> bool:
        """Are there segments this process did not write (left by a crash)?

        Also refreshes :attr:`depth` with what they hold.
        """
        return bool(self._scan())

    async def replay(self, apply: ReplayFn) -> bool:
        """One pass: replay, in order, the segments of dead processes, then
        this process's own.

        :return: ``True`` when everything claimable was replayed; ``False``
            when ``apply`` raised (the store went away): the rest waits for the
            next pass
        """
        try:
            if not await self._replay_foreign(apply):
                return False
            return await self._replay_own(apply)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.debug(
                "spendgate: spool replay paused: {}: {}", type(exc).__name__, exc
            )
            return False

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
        await asyncio.to_thread(self._write_dead_letter, line, reason)
        logger.error(
            "spendgate: Redis refused a spooled fact for good ({}): {}; kept in {}",
            reason,
            {k: v for k, v in fact.info.items() if k != "metadata"},
            self.directory / _DEAD_LETTERS,
        )

    def _write_dead_letter(self, line: bytes, reason: str) -> None:
        record = json.dumps({"reason": reason, "record": line.decode().rstrip("\n")})
        fd = os.open(
            self.directory / _DEAD_LETTERS,
            os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
            0o600,
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, record.encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)

    async def _replay_lines(
        self,
        apply: ReplayFn,
        path: Path,
        start: int,
        end: int | None,
        on_progress: Callable[[int], None],
    ) -> int:
        """Replay the complete lines of ``path`` from byte ``start`` (to ``end``).

        Calls ``on_progress(offset)`` after each applied record; returns the
        offset reached. Exceptions of ``apply`` propagate (progress is kept).
        """
        offset = start
        with open(path, "rb") as reader:
            while True:
                reader.seek(offset)
                want = _READ_CHUNK if end is None else min(_READ_CHUNK, end - offset)
                if want <= 0:
                    break
                chunk = await asyncio.to_thread(reader.read, want)
                if not chunk:
                    break
                cut = chunk.rfind(b"\n")
                if cut < 0:
                    if len(chunk) < want:
                        break  # a torn last line: never acknowledged, skip it
                    # A single record longer than a chunk: read it whole.
                    chunk += await asyncio.to_thread(reader.readline)
                    cut = chunk.rfind(b"\n")
                    if cut < 0:
                        break
                for line in chunk[: cut + 1].splitlines(keepends=True):
                    await self._apply(apply, line)
                    offset += len(line)
                    on_progress(offset)
        return offset

    async def _replay_own(self, apply: ReplayFn) -> bool:
        path = self._path
        if path is None:
            return True
        progress = path.with_name(path.name + _PROGRESS_SUFFIX)
        count = 0

        def advanced(offset: int) -> None:
            nonlocal count
            self._replayed = offset
            if self._pending_ms:
                self._pending_ms.popleft()
            count += 1
            if count % _PROGRESS_EVERY == 0:
                _write_progress(progress, offset)

        try:
            await self._replay_lines(apply, path, self._replayed, self._size, advanced)
        finally:
            if count:
                _write_progress(progress, self._replayed)
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

    def _scan(self) -> list[Path]:
        """Foreign segments in creation order; refreshes the foreign metrics."""
        try:
            names = sorted(os.listdir(self.directory))
        except OSError:  # no folder yet (or an unusable one: appends will say)
            self._foreign_depth, self._foreign_oldest_ms = 0, None
            return []
        own = self._path.name if self._path is not None else None
        found: list[Path] = []
        depth = 0
        oldest: int | None = None
        for name in names:
            path = self.directory / name
            if name.startswith(".") and name.endswith(".new"):
                self._drop_stale_hidden(path)
                continue
            is_segment = name.startswith(_SEGMENT_PREFIX) and name.endswith(
                _SEGMENT_SUFFIX
            )
            if not is_segment or name == own:
                continue
            found.append(path)
            try:
                with open(path, "rb") as reader:
                    reader.seek(_read_progress(path.with_name(name + _PROGRESS_SUFFIX)))
                    depth += reader.read().count(b"\n")
            except OSError:
                continue
            with contextlib.suppress(ValueError, IndexError):
                created = int(name[len(_SEGMENT_PREFIX) :].split("-", 1)[0])
                oldest = created if oldest is None else min(oldest, created)
        self._foreign_depth, self._foreign_oldest_ms = depth, oldest
        return found

    @staticmethod
    def _drop_stale_hidden(path: Path) -> None:
        # A segment whose creator died between create and rename: empty, as
        # nothing is written before the rename. Unlocked means abandoned.
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(path)
        except OSError:
            pass
        finally:
            os.close(fd)

    def _claim(self, path: Path) -> _Claim | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # The lock was won, but the previous claimer may have replayed and
            # deleted the file meanwhile: only the file still at that path counts.
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                raise FileNotFoundError(path)
        except OSError:
            os.close(fd)
            return None
        return _Claim(path, fd)

    async def _replay_foreign(self, apply: ReplayFn) -> bool:
        if self._closed:
            return True
        for path in await asyncio.to_thread(self._scan):
            claim = self._claim(path)
            if claim is None:
                continue  # its writer is alive (it replays it), or another claimer
            try:
                await self._replay_claim(apply, claim)
            finally:
                os.close(claim.fd)
        return True

    async def _replay_claim(self, apply: ReplayFn, claim: _Claim) -> None:
        start = _read_progress(claim.progress)
        reached = [start, 0]  # offset, records

        def advanced(offset: int) -> None:
            self._foreign_depth = max(0, self._foreign_depth - 1)
            reached[0] = offset
            reached[1] += 1
            if reached[1] % _PROGRESS_EVERY == 0:
                _write_progress(claim.progress, offset)

        try:
            await self._replay_lines(apply, claim.path, start, None, advanced)
        except BaseException:
            if reached[1]:
                _write_progress(claim.progress, reached[0])
            raise
        for stale in (claim.path, claim.progress):
            with contextlib.suppress(OSError):
                os.unlink(stale)
        logger.info(
            "spendgate: replayed {} spooled facts left by another process ({})",
            reached[1],
            claim.path.name,
        )

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
                    _write_progress(
                        self._path.with_name(self._path.name + _PROGRESS_SUFFIX),
                        self._replayed,
                    )
                os.close(self._fd)
                self._fd = None
        if self.depth:
            logger.warning(
                "spendgate: {} spooled facts wait in {} for the next process",
                self.depth,
                self.directory,
            )
