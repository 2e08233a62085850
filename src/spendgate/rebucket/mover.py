"""Moving each key where the new layout keeps it (:class:`Mover`).

Two passes over every key of the deployment (SCAN, every master of a
cluster), each key taken as :mod:`spendgate.rebucket.keyspace` reads it:
the idempotency records first (the charge or hold a record answers with
names its user while it is still in its old home), then the rest.
Every step can be taken again: a key is moved with DUMP, RESTORE REPLACE
at its new name, then DEL (a key found where it belongs stays), a record
copied again is the same record, and a project's or the platform's counter
is split as the run first wrote down (:mod:`spendgate.rebucket.shared`),
so a run that stopped half way, run again, finishes the same.
With ``dry_run`` nothing is written: the same pass counts what it would
do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from spendgate.core.fact_keys import forward_value, read_forward
from spendgate.core.keys import KEY_PARTS, Keys, glob_escape
from spendgate.ops.base import text
from spendgate.rebucket.keyspace import Found, Kind, classify, home_of
from spendgate.rebucket.layout import Layouts
from spendgate.rebucket.report import RebucketReport
from spendgate.rebucket.shared import Charge, SharedCounters

__all__ = ["Mover", "scan_keys"]

#: keys read per SCAN batch
BATCH = 500
#: keys handled at once on a cluster (its client bounds each node's pool);
#: eight times as many on a single Redis
CONCURRENCY = 32


async def scan_keys(redis: Any, prefix: str) -> Any:
    """Every key of the deployment (each home's, root and buckets), in
    batches: SCAN of every master."""
    pattern = glob_escape(f"{prefix}:") + "\\{sg*"
    batch: list[bytes] = []
    async for key in redis.scan_iter(match=pattern, count=1000):
        batch.append(key if isinstance(key, bytes) else key.encode())
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass(frozen=True, slots=True)
class Seen:
    """One key as the pass found it: its name, its home (and that home's
    number, ``None`` for the root's), its name below the home's base, and
    what it is."""

    name: bytes
    home: Keys
    number: int | None
    rest: str
    found: Found

    @property
    def kind(self) -> Kind:
        return self.found.kind

    @property
    def owner(self) -> str:
        return self.found.owner


_FW, _IDEM = Kind.FORWARD, Kind.IDEMPOTENCY


class Mover:
    """One run's moves (see the module)."""

    def __init__(
        self, redis: Any, layouts: Layouts, report: RebucketReport, key_prefix: str
    ) -> None:
        self.redis, self.at = redis, layouts
        self.shared = SharedCounters(redis, layouts, report.run, report.dry_run)
        self.report = report
        self.dry = report.dry_run
        self._prefix = key_prefix
        self._home = home_of(key_prefix)
        self._limits: set[str] = set()
        self._old_bases = {h.base for h in layouts.old.stream_homes()}
        #: the charges whose refund records split a counter (SCAN may meet
        #: one twice: at its old name and, moved, at its new one)
        self._charges: set[str] = set()
        concurrency = CONCURRENCY if hasattr(redis, "get_nodes") else 8 * CONCURRENCY
        self._slots = asyncio.Semaphore(concurrency)

    async def run(self) -> None:
        """The pass over every key, then what the new homes need."""
        # Idempotency records first: the charge or hold a record names says
        # its user while both are still in their old home.
        async for batch in scan_keys(self.redis, self._prefix):
            seen = [self._read(key) for key in batch]
            await asyncio.gather(*(self._act(k) for k in seen if k.kind is _IDEM))
        async for batch in scan_keys(self.redis, self._prefix):
            seen = [self._read(key) for key in batch]
            rest = [k for k in seen if k.kind is not _IDEM]
            # (forwards last: one this run wrote in the batch is then kept)
            await asyncio.gather(*(self._act(k) for k in rest if k.kind is not _FW))
            await asyncio.gather(*(self._act(k) for k in rest if k.kind is _FW))
        self.report.merged = await self.shared.merge_all()
        await self._vanishing()
        await self._mirror_price_book()

    def _read(self, key: bytes) -> Seen:
        where = self._home.fullmatch(key)
        if where is None:  # (a key of another deployment's prefix)
            return Seen(key, self.at.root, None, "", Found(Kind.UNKNOWN))
        number = None if where.group(1) is None else int(where.group(1))
        rest = where.group(2).decode()
        return Seen(key, self.at.home(number), number, rest, classify(rest))

    async def _act(self, key: Seen) -> None:
        act = _ACTIONS.get(key.kind)
        if act is not None:
            async with self._slots:
                await act(self, key)

    # -- one key ------------------------------------------------------------------

    async def _user(self, key: Seen) -> None:
        await self._move(key, self.at.new.of(key.owner))

    async def _hold(self, key: Seen) -> None:
        # (pending ones were refused first: a finished one's record answers
        # a repeated settle or release, and a late settle is charged)
        user = await self.redis.hget(key.name, "u")
        if user is not None:
            await self._forwarded(key, text(user))

    async def _charge(self, key: Seen) -> None:
        record = await self.redis.get(key.name)
        if record is not None:
            charge = Charge(record)
            if key.owner not in self._charges:
                self._charges.add(key.owner)
                self.shared.charged(charge, self.at.new.of(charge.user))
            await self._forwarded(key, charge.user)

    async def _forwarded(self, key: Seen, user: str) -> None:
        """A record named by an id (a charge's, a hold's) to its user's new
        bucket; where the id names another, a forward there (the calls
        follow it: ``Reply.MOVED``), which lives as long as the record."""
        target = self.at.new.of(user)
        named = self.at.new.of_id(key.owner)
        if named.base != target.base:
            self.report.forwarded += 1
            if not self.dry:
                number = Layouts.number(target, self.at.new) or 0  # (root: 0 of 1)
                ttl = await self.redis.pttl(key.name)
                await self.redis.set(
                    named.forward(key.owner),
                    forward_value(number, self.report.run),
                    px=ttl if ttl > 0 else None,
                )
        await self._move(key, target)

    async def _forward(self, key: Seen) -> None:
        value = await self.redis.get(key.name)
        if value is not None and read_forward(value)[1] != self.report.run:
            await self._delete(key.name)  # (an earlier run's: this one writes its own)

    async def _mark(self, key: Seen) -> None:
        if not key.owner.startswith(self.report.run + ":"):
            await self._delete(key.name)  # (an earlier run's)

    async def _idempotency(self, key: Seen) -> None:
        home, rest = key.home, key.rest
        if home.base not in self._old_bases:
            return  # (a copy this run, or a stopped one, made: complete)
        user = await self._user_of_record(key)
        if user is None:  # (every bucket a user of its old one can be in)
            targets = self.at.candidates(key.number)
        else:
            targets = (self.at.new.of(user),)
        others = [t for t in targets if t.base != home.base]
        if not others:
            self.report.unchanged += 1
            return
        self.report.copied += len(others)
        if self.dry:
            return
        dumped, ttl = await self._dump(key.name)
        if dumped is None:
            return
        stays = any(t.base == home.base for t in targets)
        await self._place(dumped, ttl, [t.base + rest for t in others], key.name, stays)

    async def _user_of_record(self, key: Seen) -> str | None:
        """The user of an idempotency record, where the charge or hold it
        answers with (its entry or lease id, the payload's first field;
        a generated record's key is the entry id) is still kept: a record
        of a spend, a deduct or a reserve. ``None`` for the others (a
        credit, a refund, an adjustment, an extend, a feature's use)."""
        if key.rest.startswith(KEY_PARTS["GENERATED_IDEMPOTENCY"]):
            named = key.owner
        else:
            value = await self.redis.get(key.name)
            if value is None:
                return None
            named = text(value).split("|", 2)[1] if value.count(b"|") else ""
        if not named:
            return None
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(key.home.charge(named))
        pipe.hget(key.home.hold(named), "u")
        record, holder = await pipe.execute()
        if record is not None:
            return Charge(record).user
        return None if holder is None else text(holder)

    async def _grants_due(self, key: Seen) -> None:
        members = await self.redis.zrange(key.name, 0, -1, withscores=True)
        going: dict[str, dict[bytes, float]] = {}
        for member, score in members:
            target = self.at.new.of(text(member))
            if target.base != key.home.base:
                going.setdefault(target.base, {})[member] = score
        self.report.moved += sum(len(m) for m in going.values())
        if self.dry or not going:
            return
        for base, moving in going.items():
            await self.redis.zadd(base + KEY_PARTS["GRANTS_DUE"], moving)
            await self.redis.zrem(key.name, *moving)

    async def _shared_counter(self, key: Seen) -> None:
        self.shared.found(key.found.group)  # (split once the pass found all)

    async def _shared_limits(self, key: Seen) -> None:
        rest = key.rest
        if rest in self._limits:
            return
        self._limits.add(rest)
        values = [await self.redis.get(h.base + rest) for h in self.at.old_homes()]
        value = next((v for v in values if v is not None), None)
        if value is None:
            return
        self.report.limits += 1
        if self.dry:
            return
        kept = {h.base for h in self.at.new_homes()}
        for h in self.at.new_homes():
            await self.redis.set(h.base + rest, value)
        for h in self.at.old_homes():
            if h.base not in kept:
                await self.redis.delete(h.base + rest)

    async def _shared_summed(self, key: Seen) -> None:
        if self.at.to_buckets > 1:
            await self._shared_other(key)
        else:
            self.shared.found(key.found.group)

    async def _shared_other(self, key: Seen) -> None:
        if self.at.to_buckets > 1:
            self.report.dropped += 1
            await self._delete(key.name)
        else:
            await self._move(key, self.at.root)

    # -- moving -------------------------------------------------------------------

    async def _move(self, key: Seen, target: Keys) -> None:
        if target.base == key.home.base:
            self.report.unchanged += 1
            return
        self.report.moved += 1
        if self.dry:
            return
        dumped, ttl = await self._dump(key.name)
        if dumped is not None:
            await self._place(dumped, ttl, [target.base + key.rest], key.name)

    async def _dump(self, key: bytes) -> tuple[bytes | None, int]:
        """The key's DUMP and what is left of its life (ms, 0: none);
        ``None`` when it is gone (expired meanwhile): one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.dump(key)
        pipe.pttl(key)
        dumped, ttl = await pipe.execute()
        if dumped is None or ttl == -2:
            return None, 0
        return dumped, max(ttl, 0)

    async def _place(
        self, dumped: bytes, ttl: int, names: list[str], key: bytes, stays: bool = False
    ) -> None:
        """``dumped`` restored at each of ``names``, then ``key`` deleted
        (unless it ``stays``): one round trip (a pipeline, in that order)."""
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.restore(name.encode(), ttl, dumped, replace=True)
        if not stays:
            pipe.delete(key)
        await pipe.execute()

    async def _delete(self, key: bytes | str) -> None:
        if not self.dry:
            await self.redis.delete(key)

    # -- the homes ----------------------------------------------------------------

    async def _vanishing(self) -> None:
        """What the homes that are gone kept of their own: their streams
        (read to the end by their consumer groups, checked before; one no
        group reads is copied to the root's), pending holds' index,
        consumer sets."""
        for home in self.at.vanishing():
            pattern = glob_escape(home.base) + "*"
            async for key in self.redis.scan_iter(match=pattern, count=1000):
                rest = text(key)[len(home.base) :]
                kind = classify(rest).kind
                if kind is Kind.STREAM and not await self.redis.xinfo_groups(key):
                    await self._copy_stream(key, self.at.root.base + rest)
                if kind in (Kind.HOME, Kind.STREAM, Kind.GRANTS_DUE):
                    # (a run empties these first: their users moved, their
                    # expired holds purged; a dry run counts them alike)
                    emptied = rest == KEY_PARTS["HOLDS"] or kind is Kind.GRANTS_DUE
                    self.report.removed += not emptied
                    await self._delete(key)

    async def _copy_stream(self, key: bytes, to: str) -> None:
        """The entries of a stream no consumer group reads (a ledger kept
        without Postgres, dead letters), appended to ``to`` in their order
        (new ids), each batch trimmed from ``key`` once copied: a run
        stopped between the two copies at most that batch twice."""
        if self.dry:
            self.report.stream_entries += await self.redis.xlen(key)
            return
        while True:
            entries = await self.redis.xrange(key, count=BATCH)
            if not entries:
                return
            self.report.stream_entries += len(entries)
            for _, fields in entries:
                await self.redis.xadd(to, fields)
            await self.redis.xdel(key, *(entry_id for entry_id, _ in entries))

    async def _mirror_price_book(self) -> None:
        """Each bucket keeps the active price book version (deduct checks
        its own copy): the new buckets get it."""
        if self.at.to_buckets == 1 or self.dry:
            return
        active = await self.redis.get(self.at.root.price_active)
        if active is not None:
            for home in self.at.new_homes():
                await self.redis.set(home.price_active, active)


_Action = Callable[[Mover, Seen], Awaitable[None]]

#: what is done with each kind of key (the others stay where they are)
_ACTIONS: dict[Kind, _Action] = {
    Kind.USER: Mover._user,
    Kind.HOLD: Mover._hold,
    Kind.CHARGE: Mover._charge,
    Kind.FORWARD: Mover._forward,
    Kind.MERGED: Mover._mark,
    Kind.IDEMPOTENCY: Mover._idempotency,
    Kind.GRANTS_DUE: Mover._grants_due,
    Kind.SHARED_COUNTER: Mover._shared_counter,
    Kind.ESCROW: Mover._shared_counter,
    Kind.SHARED_LIMITS: Mover._shared_limits,
    Kind.SHARED_SUMMED: Mover._shared_summed,
    Kind.SHARED_DROPPED: Mover._shared_other,
    Kind.SHARED_MODEL_LIMITS: Mover._shared_other,
    Kind.TEAM: Mover._shared_other,
}
