"""The spool's folder on disk: names, segments, claims, the progress hint.

Everything here is file-system work without the spool's state: creating a
segment (locked before anyone can see it), claiming a dead writer's segment,
reading a segment's complete lines, saving progress, appending to the
dead-letter files. :class:`spendgate.durability.spool.Spool` composes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import AsyncGenerator
from pathlib import Path

from loguru import logger

SEGMENT_PREFIX = "seg-"
SEGMENT_SUFFIX = ".log"
PROGRESS_SUFFIX = ".done"
#: facts Redis refused for good on replay
DEAD_LETTERS = "dead.log"
#: records that could not be read, with their file and offset
QUARANTINE = "quarantine.log"
# Bytes of a segment read at once during replay.
_READ_CHUNK = 1 << 20


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


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def is_segment(name: str) -> bool:
    return name.startswith(SEGMENT_PREFIX) and name.endswith(SEGMENT_SUFFIX)


def segment_created_ms(name: str) -> int | None:
    """When a segment was created, from its name (``None`` if unreadable)."""
    try:
        return int(name[len(SEGMENT_PREFIX) :].split("-", 1)[0])
    except ValueError:
        return None


def progress_path(segment: Path) -> Path:
    """The segment's progress hint: the byte offset replayed so far."""
    return segment.with_name(segment.name + PROGRESS_SUFFIX)


def replay_start(segment: Path) -> tuple[int, str | None]:
    """Where replaying ``segment`` starts: its progress hint when the hint is
    sound, else 0, with why the hint was not.

    The hint only saves work, so it must never be what skips a fact: an
    offset counts only when it lands on a record boundary inside the file.
    Replaying from 0 instead is harmless (replays are idempotent).
    """
    try:
        text = progress_path(segment).read_text().strip()
    except FileNotFoundError:
        return 0, None
    except (OSError, UnicodeDecodeError) as exc:
        return 0, f"unreadable ({exc})"
    if not (text.isascii() and text.isdigit()):
        return (0, None) if not text else (0, f"not an offset: {text[:40]!r}")
    hint = int(text)
    if hint == 0:
        return 0, None
    try:
        with open(segment, "rb") as reader:
            size = os.fstat(reader.fileno()).st_size
            if hint > size:
                return 0, f"offset {hint} is past the end of the file ({size} bytes)"
            reader.seek(hint - 1)
            if reader.read(1) != b"\n":
                return 0, f"offset {hint} is not the start of a record"
    except OSError as exc:
        return 0, f"the segment is unreadable ({exc})"
    return hint, None


def write_progress(path: Path, offset: int) -> None:
    # A hint only (see the spool's docstring): written atomically, not fsynced.
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(str(offset))
        os.replace(tmp, path)
    except OSError as exc:
        logger.debug("spendgate: could not save spool progress {}: {}", path, exc)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_segment(directory: Path) -> tuple[int, Path]:
    """A new segment of this process: its fd, holding the ``flock``, and path.

    Created under a hidden name, locked, then renamed, so nobody can claim it
    in between.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    name = (
        f"{SEGMENT_PREFIX}{now_ms():013d}-{os.getpid()}-"
        f"{os.urandom(4).hex()}{SEGMENT_SUFFIX}"
    )
    hidden = directory / f".{name}.new"
    path = directory / name
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
    fd = os.open(hidden, flags, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(hidden, path)
        fsync_dir(directory)
    except OSError:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(hidden)
        raise
    return fd, path


def drop_stale_hidden(path: Path) -> None:
    """Remove a segment whose creator died between create and rename: empty,
    as nothing is written before the rename. Unlocked means abandoned."""
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


def claim(path: Path) -> int | None:
    """Lock another process's segment for replay: the fd holding the lock, or
    ``None`` when its writer is alive (or another process claimed it)."""
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
    return fd


def append_line(path: Path, line: bytes) -> None:
    """Append one line to a shared file (dead letters), durably, under a lock."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


async def complete_lines(
    path: Path, start: int, end: int | None
) -> AsyncGenerator[tuple[int, bytes], None]:
    """The lines of ``path`` from byte ``start`` (to ``end``), each with the
    offset where it starts. The last may be torn (no newline: its writer died
    mid-write, before its caller was answered)."""
    offset = start
    with open(path, "rb") as reader:
        while True:
            reader.seek(offset)
            want = _READ_CHUNK if end is None else min(_READ_CHUNK, end - offset)
            if want <= 0:
                return
            chunk = await asyncio.to_thread(reader.read, want)
            if not chunk:
                return
            cut = chunk.rfind(b"\n")
            if cut < 0 and len(chunk) == want:
                # A single record longer than a chunk: read it whole.
                chunk += await asyncio.to_thread(reader.readline)
                cut = chunk.rfind(b"\n")
            if cut < 0:
                yield offset, chunk  # a torn last line
                return
            # Split at b"\n" only: a flipped byte that reads as b"\r" must not
            # cut one record in two.
            at = 0
            while at <= cut:
                stop = chunk.index(b"\n", at) + 1
                yield offset, chunk[at:stop]
                offset += stop - at
                at = stop
