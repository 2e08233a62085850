"""An event dispatcher's heartbeat, and its claims on what dead dispatchers
of its group held, in every stream home.

A dispatcher keeps its heartbeat in each home it reads (the group's set of
dispatchers, ``Keys.dispatchers``, and its own key, ``Keys.dispatcher``),
all renewed by one pipeline: a claim in a home (``events_claim.lua``) reads
that home's heartbeat and streams only, so on a Redis Cluster every script
stays within one slot. :class:`Claims` is the part of
:class:`~spendgate.events.streams.EventStreams` that does this.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, cast

from redis.asyncio import Redis, RedisCluster

from spendgate.core.keys import Keys
from spendgate.events.entries import Entry, Source, lua_source, stream_of
from spendgate.ledger.entries import clean_text
from spendgate.ledger.stream import stream_entries

if TYPE_CHECKING:
    from redis.asyncio.client import Pipeline
    from redis.commands.core import AsyncScript

#: events claimed from a dead dispatcher at most per stream and script call
CLAIM_COUNT = 500


class DeadConsumer(NamedTuple):
    """A dispatcher of the group whose heartbeat expired."""

    #: its consumer name
    name: str
    #: the homes (indexes of ``homes``) where it is registered and dead
    homes: tuple[int, ...]


class Claims:
    """Heartbeats and claims, home by home (see the module)."""

    redis: Redis
    homes: tuple[Keys, ...]
    group: str
    consumer: str
    claim_idle_ms: int
    reading: list[Source]
    _claim_script: AsyncScript | None

    def _pipeline(self) -> Pipeline:
        """A pipeline that is a transaction where one can be: with one home,
        or on a single Redis (a cluster's transaction takes one slot)."""
        atomic = len(self.homes) == 1 or not isinstance(self.redis, RedisCluster)
        return self.redis.pipeline(transaction=atomic)

    async def beat(self, ttl_ms: int, status: str) -> None:
        """Renew this dispatcher's heartbeat in every home for ``ttl_ms``."""
        pipe = self._pipeline()
        for home in self.homes:
            pipe.sadd(home.dispatchers(self.group), self.consumer)
            pipe.set(home.dispatcher(self.consumer), status, px=ttl_ms)
        await pipe.execute()

    async def end_beat(self) -> None:
        """Drop the heartbeat now (a clean stop): what this dispatcher still
        holds is claimed at once by another of its group."""
        if len(self.homes) == 1:
            await self.redis.delete(self.homes[0].dispatcher(self.consumer))
            return
        pipe = self.redis.pipeline(transaction=False)
        for home in self.homes:  # (one DEL per home: one slot each)
            pipe.delete(home.dispatcher(self.consumer))
        await pipe.execute()

    async def dead_consumers(self) -> list[DeadConsumer]:
        """The group's dispatchers that kept a heartbeat and whose heartbeat
        expired, each with the homes where it did."""
        pipe = self.redis.pipeline(transaction=False)
        for home in self.homes:
            pipe.smembers(home.dispatchers(self.group))
        registered = [
            (index, name)
            for index, names in enumerate(await pipe.execute())
            for name in map(clean_text, names)
            if name != self.consumer
        ]
        if not registered:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for index, name in registered:
            pipe.exists(self.homes[index].dispatcher(name))
        dead: dict[str, list[int]] = {}
        for (index, name), up in zip(registered, await pipe.execute(), strict=True):
            if not up:
                dead.setdefault(name, []).append(index)
        return [DeadConsumer(name, tuple(homes)) for name, homes in dead.items()]

    async def claim_dead(self, dead: DeadConsumer) -> tuple[int, list[Entry]]:
        """Claim up to :data:`CLAIM_COUNT` events per stream pending on
        ``dead``, a dispatcher whose heartbeat expired, in each of its homes;
        forget it in a home once it holds none there.

        :return: how many it held (-1: its heartbeat is back, and it held
            none here), and the entries now this dispatcher's
        """
        if self._claim_script is None:
            self._claim_script = self.redis.register_script(lua_source("events_claim"))
        sources = list(self.reading)
        held, back = 0, False
        entries: list[Entry] = []
        for index in dead.homes:
            home = self.homes[index]
            reply = await self._claim_script(
                keys=[
                    home.dispatchers(self.group),
                    home.dispatcher(dead.name),
                    *(stream_of(home, s) for s in sources),
                ],
                args=[self.group, dead.name, self.consumer, CLAIM_COUNT],
            )
            if int(reply[0]) < 0:
                back = True  # (its beats renew every home: it is alive)
                continue
            held += int(reply[0])
            entries.extend(
                Entry(source, sid, fields, index)
                for source, claimed in zip(sources, reply[1:], strict=False)
                for sid, fields in stream_entries(claimed)
            )
        return (-1 if back and not held else held), entries

    async def claim_abandoned(self) -> list[Entry]:
        """Claim the events pending for ``claim_idle`` on consumers that keep
        no heartbeat (and have not read for as long), in every home."""
        pipe = self.redis.pipeline(transaction=False)
        for home in self.homes:
            pipe.smembers(home.dispatchers(self.group))
            for source in self.reading:
                pipe.xinfo_consumers(stream_of(home, source), self.group)
        replies = iter(await pipe.execute())
        claimed: list[Entry] = []
        for index in range(len(self.homes)):
            registered = {clean_text(name) for name in next(replies)}
            for source in self.reading:
                for info in next(replies):
                    name = clean_text(info["name"])
                    if (
                        name == self.consumer
                        or name in registered
                        or not info["pending"]
                        or info["idle"] < self.claim_idle_ms
                    ):
                        continue
                    claimed += await self._claim_idle(index, source, name)
        return claimed

    async def _claim_idle(self, index: int, source: Source, name: str) -> list[Entry]:
        """Claim what ``name`` has held for ``claim_idle`` on one stream."""
        stream = stream_of(self.homes[index], source)
        pending = await self.redis.xpending_range(
            stream,
            self.group,
            min="-",
            max="+",
            count=CLAIM_COUNT,
            consumername=name,
            idle=self.claim_idle_ms,
        )
        ids: list[Any] = [p["message_id"] for p in pending]
        if not ids:
            return []
        # min_idle_time again: another dispatcher that claimed them meanwhile
        # keeps them.
        got = await self.redis.xclaim(
            stream, self.group, self.consumer, self.claim_idle_ms, ids
        )
        return [
            Entry(source, sid, fields, index)
            for sid, fields in stream_entries(cast(Any, got))
        ]
