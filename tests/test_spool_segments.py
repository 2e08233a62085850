"""The spool's segments on disk: who replays them, and what survives damage and crashes.

Checked on ``Spool`` itself: a live writer's segment is never replayed by
anyone else (only once its lock is dropped, as when its process dies);
concurrent appends are committed together and replayed in order; the spool's
files and folder are private; an unreadable record (a flipped byte, a torn
tail) is quarantined with its file and offset while the rest replays; a
damaged progress hint never skips facts, a sound one saves the replayed
part; the age metric is of what still waits (none once leftovers are
replayed). Durability: an append returns only once ``os.fsync`` made it
durable (a spy on ``os.fsync``), a failing fsync raises from ``append`` and
keeps no record, and a manager then does not report the fact spooled.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import json
import os
import stat
import time
from decimal import Decimal
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from loguru import logger

from spendgate import SpoolFullError
from spendgate.durability.spool import Spool, SpooledFact
from spool_helpers import _drained, _manager, _record_fact, _Switch, flaky

__all__ = ["flaky"]  # (the fixture, used by name)


async def test_a_live_writers_segment_is_never_replayed_by_another(
    tmp_path: Path,
) -> None:
    writer, other = Spool(tmp_path, 100), Spool(tmp_path, 100)
    fact = _record_fact(1)
    await writer.append(fact)
    applied: list[SpooledFact] = []

    async def apply(fact: SpooledFact) -> str | None:
        applied.append(fact)
        return None

    assert await other.replay(apply)
    assert applied == [] and other.depth == 1  # seen, not claimed
    await writer.aclose()  # the lock is dropped, as when a process dies
    assert await other.replay(apply)
    assert [f.args for f in applied] == [fact.args] and other.depth == 0
    assert not list(tmp_path.glob("seg-*"))
    await other.aclose()


async def test_concurrent_appends_are_group_committed_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10_000)
    facts = [_record_fact(i, model="x" * (i % 7)) for i in range(500)]
    await asyncio.gather(*(spool.append(f) for f in facts))
    assert spool.depth == 500 and spool.spooled_total == 500
    seen: list[SpooledFact] = []

    async def apply(fact: SpooledFact) -> str | None:
        seen.append(fact)
        return None

    assert await spool.replay(apply)
    assert [f.args for f in seen] == [f.args for f in facts]
    assert spool.depth == 0 and spool.oldest_age_seconds is None
    await spool.aclose()


async def test_spool_files_are_private(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "deep" / "spool", 10)
    await spool.append(_record_fact())
    (segment,) = spool.directory.glob("seg-*")
    assert os.stat(segment).st_mode & 0o077 == 0
    assert os.stat(spool.directory).st_mode & 0o077 == 0
    await spool.aclose()


async def _left_segment(directory: Path, count: int) -> tuple[Path, list[SpooledFact]]:
    """A segment of ``count`` facts whose writer is gone (as after a crash)."""
    writer = Spool(directory, 1000)
    facts = [_record_fact(i) for i in range(count)]
    for fact in facts:
        await writer.append(fact)
    await writer.aclose()
    (segment,) = directory.glob("seg-*.log")
    return segment, facts


async def _replay_all(spool: Spool) -> list[SpooledFact]:
    applied: list[SpooledFact] = []

    async def apply(fact: SpooledFact) -> str | None:
        applied.append(fact)
        return None

    assert await spool.replay(apply)
    return applied


async def test_an_unreadable_record_is_quarantined_with_its_file_and_offset(
    tmp_path: Path,
) -> None:
    segment, facts = await _left_segment(tmp_path, 3)
    lines = segment.read_bytes().splitlines(keepends=True)
    flipped = bytearray(lines[1])
    flipped[30] ^= 0x0D  # one flipped byte: the checksum fails
    torn = lines[2][:25]  # its writer died mid-line: never acknowledged
    segment.write_bytes(lines[0] + bytes(flipped) + lines[2] + torn)
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(str(m)), level="WARNING")
    spool = Spool(tmp_path, 100)
    try:
        applied = await _replay_all(spool)
    finally:
        logger.remove(sink)
    assert [f.args for f in applied] == [facts[0].args, facts[2].args]
    assert not list(tmp_path.glob("seg-*"))  # replayed, the segment is gone...
    kept = (tmp_path / "quarantine.log").read_text().splitlines()
    quarantine = [json.loads(x) for x in kept]
    assert [(q["segment"], q["offset"]) for q in quarantine] == [
        (segment.name, len(lines[0])),  # ...but what it could not read is kept
        (segment.name, len(lines[0]) + len(flipped) + len(lines[2])),
    ]
    assert [base64.b64decode(q["raw"]) for q in quarantine] == [bytes(flipped), torn]
    assert "checksum" in quarantine[0]["reason"] and "torn" in quarantine[1]["reason"]
    assert spool.stats()["quarantined"] == 2 and spool.quarantined == 2
    assert spool.stats()["corrupt_lines"] == 1  # (the torn tail is not corrupt)
    logged = "\n".join(messages)
    assert f"{segment.name} at byte {len(lines[0])}" in logged
    assert str(tmp_path / "quarantine.log") in logged
    await spool.aclose()


@pytest.mark.parametrize(
    "hint",
    ["999999", "5", "-3", "garbage", "first+1"],
)
async def test_a_corrupted_progress_hint_never_skips_facts(
    tmp_path: Path, hint: str
) -> None:
    segment, facts = await _left_segment(tmp_path, 3)
    first = len(segment.read_bytes().splitlines(keepends=True)[0])
    progress = segment.with_name(segment.name + ".done")
    progress.write_text(str(first + 1) if hint == "first+1" else hint + "\n")
    spool = Spool(tmp_path, 100)
    assert spool.has_leftovers() and spool.depth == 3
    applied = await _replay_all(spool)
    assert [f.args for f in applied] == [f.args for f in facts]
    assert not list(tmp_path.glob("seg-*")) and spool.depth == 0
    await spool.aclose()


async def test_a_sound_progress_hint_still_saves_the_replayed_part(
    tmp_path: Path,
) -> None:
    segment, facts = await _left_segment(tmp_path, 3)
    first = len(segment.read_bytes().splitlines(keepends=True)[0])
    segment.with_name(segment.name + ".done").write_text(str(first))
    spool = Spool(tmp_path, 100)
    assert spool.has_leftovers() and spool.depth == 2
    applied = await _replay_all(spool)
    assert [f.args for f in applied] == [f.args for f in facts[1:]]
    await spool.aclose()


async def test_no_age_is_reported_once_another_process_leftovers_are_replayed(
    tmp_path: Path,
) -> None:
    # A restart replays the segment the previous process left: the spool is
    # then empty, and an age would alert for ever (issue 23, item 4).
    segment, _ = await _left_segment(tmp_path, 2)
    spool = Spool(tmp_path, 100)
    assert spool.has_leftovers() and spool.oldest_age_seconds is not None
    await _replay_all(spool)
    assert spool.depth == 0
    assert spool.oldest_age_seconds is None
    assert spool.stats()["oldest_age_seconds"] is None
    await spool.aclose()


async def test_the_age_is_of_what_is_still_waiting(tmp_path: Path) -> None:
    # A dead process's segment from a minute ago, and a live writer's new one:
    # once the first is replayed, the age is the second's.
    segment, _ = await _left_segment(tmp_path, 1)
    minute_ago = int(time.time() * 1000) - 60_000
    segment.rename(tmp_path / f"seg-{minute_ago:013d}-1-dead.log")
    live = Spool(tmp_path, 100)
    await live.append(_record_fact(7))
    spool = Spool(tmp_path, 100)
    assert spool.has_leftovers() and spool.depth == 2
    age = spool.oldest_age_seconds
    assert age is not None and age >= 60
    applied = await _replay_all(spool)
    assert len(applied) == 1 and spool.depth == 1  # the live one waits
    age = spool.oldest_age_seconds
    assert age is not None and age < 30
    await live.aclose()
    await spool.aclose()


class _FsyncSpy:
    """Wraps ``os.fsync``: records what each call made durable (the file's
    inode and size at that moment), and can be told to fail on files."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[int, int, bool]] = []  # inode, size, a folder
        self.fail_files = False
        self._real = os.fsync
        monkeypatch.setattr(os, "fsync", self)

    def __call__(self, fd: int) -> None:
        info = os.fstat(fd)
        folder = stat.S_ISDIR(info.st_mode)
        if self.fail_files and not folder:
            raise OSError(errno.EIO, "Input/output error (test)")
        self._real(fd)
        self.calls.append((info.st_ino, info.st_size, folder))


async def test_an_append_returns_only_once_its_record_is_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _FsyncSpy(monkeypatch)
    spool = Spool(tmp_path, 100)
    for i in range(3):
        await spool.append(_record_fact(i))
        (segment,) = tmp_path.glob("seg-*.log")
        now = os.stat(segment)
        # The segment was fsynced holding every record appended so far...
        assert (now.st_ino, now.st_size, False) in spy.calls
    # ...and its folder, so the segment's name survives a crash too.
    assert (os.stat(tmp_path).st_ino, True) in {(c[0], c[2]) for c in spy.calls}
    await spool.aclose()


async def test_a_failing_fsync_raises_from_append_and_keeps_no_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _FsyncSpy(monkeypatch)
    spool = Spool(tmp_path, 100)
    await spool.append(_record_fact(0))
    spy.fail_files = True
    with pytest.raises(SpoolFullError, match="could not be written"):
        await spool.append(_record_fact(1))
    assert spool.spooled_total == 1 and spool.depth == 1
    spy.fail_files = False
    await spool.append(_record_fact(2))
    # The failed record was cut off: its caller was told it is not spooled,
    # so it must never be replayed (it would be counted if retried).
    applied = await _replay_all(spool)
    assert [f.args["entry"] for f in applied] == ["entry-0", "entry-2"]
    await spool.aclose()


async def test_a_fact_is_not_reported_spooled_when_fsync_fails(
    flaky: tuple[aioredis.Redis, _Switch, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, switch, _ = flaky
    spy = _FsyncSpy(monkeypatch)
    async with _manager(flaky, tmp_path) as budget:
        switch.mode = "down"
        spy.fail_files = True
        with pytest.raises(SpoolFullError):
            await budget.record_spend("kim", "1")
        spy.fail_files = False
        assert (await budget.record_spend("kim", "2")).spooled
        switch.mode = "ok"
        await _drained(budget)
        usage = await budget.get_usage("kim")
        assert usage["user"].daily.spent == Decimal(2)
