"""The Redis side of an event dispatcher: one consumer of a group that reads
the events stream, and the ledger stream when its targets want fact events.

Each group gets every event once; the dispatchers of one group share them
(each event goes to one of them). A dispatcher reads with ``XREADGROUP``
(blocking, on a connection of its own), acknowledges what it delivered, and
claims what dead dispatchers of its group held:

- at once from a dispatcher whose heartbeat expired (``events_claim.lua``,
  as the flusher does with ``ledger_claim.lua``);
- after ``claim_idle`` from a consumer that keeps no heartbeat, and only
  then (``XPENDING`` + ``XCLAIM``: ``XAUTOCLAIM`` would also take the events
  a live dispatcher is still retrying).

Deleting: an events stream entry is deleted once every group reading it
has acknowledged it (``stream_ack.lua``). A ledger entry is only
acknowledged here: the flusher deletes it once every group has (so, with a
dispatcher reading the ledger, the flusher keeps what the dispatcher has not
read yet), and without a flusher the stream stays capped by
``ledger_maxlen`` as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, cast

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from spendgate.core.keys import Keys
from spendgate.core.scripts import lua_dir
from spendgate.ledger.entries import RawFields, clean_text
from spendgate.ledger.stream import stream_entries

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

#: which stream an entry came from
Source = Literal["events", "ledger"]

#: events claimed from a dead dispatcher at most per stream and script call
CLAIM_COUNT = 500
#: entries the dead-letter stream keeps, about (older ones are trimmed)
DEAD_LETTER_MAXLEN = 100_000


class Entry(NamedTuple):
    """One stream entry given to this dispatcher."""

    #: the stream it came from
    source: Source
    #: its stream id
    stream_id: str
    #: its fields; ``None`` when it was deleted (trimmed) meanwhile
    fields: RawFields | None


class DeadLetter(NamedTuple):
    """An event no target took, for the dead-letter stream."""

    entry: Entry
    #: the event's id (the ledger entry id of a fact event)
    event_id: str
    #: the event as JSON (empty when the entry could not be read as one)
    body: bytes
    #: the target that did not take it (``-``: none, the entry is malformed)
    target: str
    #: attempts made
    attempts: int
    #: the last error, as text
    error: str


@cache
def _source(name: str) -> bytes:
    return (lua_dir() / f"{name}.lua").read_bytes()


def stream_replies(raw: Any) -> list[tuple[str, Any]]:
    """An ``XREADGROUP`` reply as ``(stream name, entries)`` pairs."""
    if not raw:
        return []
    if isinstance(raw, dict):  # RESP3 (read as the flusher reads it)
        return [
            (clean_text(name), e[0] if e and isinstance(e[0], list) else e)
            for name, e in raw.items()
        ]
    return [(clean_text(item[0]), item[1]) for item in raw]


class EventStreams:
    """One dispatcher as a consumer of its group on the event streams.

    :param redis: the dispatcher's own client (blocking reads hold a
        connection)
    :param keys: the deployment's keys
    :param group: the consumer group
    :param consumer: this dispatcher's name in the group (unique)
    :param batch_size: entries read at most per stream and call
    :param claim_idle_ms: events pending this long on a consumer that keeps
        no heartbeat are claimed
    """

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        *,
        group: str,
        consumer: str,
        batch_size: int,
        claim_idle_ms: int,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.group = group
        self.consumer = consumer
        self.batch_size = batch_size
        self.claim_idle_ms = claim_idle_ms
        self.stream_of: dict[Source, str] = {
            "events": keys.events,
            "ledger": keys.ledger,
        }
        self._source_of = {v: k for k, v in self.stream_of.items()}
        #: the streams whose group exists (created by :meth:`ensure_groups`)
        self.reading: list[Source] = []
        self._ack_script: AsyncScript | None = None
        self._claim_script: AsyncScript | None = None

    # -- groups ------------------------------------------------------------

    async def ensure_groups(self, facts: bool) -> None:
        """Create the group on the events stream, and on the ledger stream
        when ``facts``, unless they exist. A new group starts at the oldest
        entry the stream still holds."""
        wanted: list[Source] = ["events", "ledger"] if facts else ["events"]
        for source in wanted:
            if source in self.reading:
                continue
            try:
                await self.redis.xgroup_create(
                    self.stream_of[source], self.group, id="0", mkstream=True
                )
            except redis_errors.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self.reading.append(source)

    def groups_lost(self) -> None:
        """A stream (and its group) was deleted: create them again next time."""
        self.reading = []

    # -- reading -------------------------------------------------------------

    async def read(self, start: str, block_ms: int | None = None) -> list[Entry]:
        """One batch from every stream read: ``"0"`` for this consumer's
        unacknowledged entries, ``">"`` for new ones (waiting up to
        ``block_ms`` for one when there are none)."""
        streams = {self.stream_of[s]: start for s in self.reading}
        reply = await self.redis.xreadgroup(
            self.group,
            self.consumer,
            streams,  # type: ignore[arg-type]
            count=self.batch_size,
            block=block_ms,
        )
        return [
            Entry(self._source_of[name], sid, fields)
            for name, entries in stream_replies(reply)
            for sid, fields in stream_entries(entries)
        ]

    # -- acknowledging -----------------------------------------------------------

    async def ack(self, source: Source, ids: Sequence[str]) -> None:
        """Acknowledge delivered entries. An events stream entry is deleted
        once every group has acknowledged it; a ledger entry is left to the
        flusher."""
        if not ids:
            return
        stream = self.stream_of[source]
        if source == "ledger":
            await self.redis.xack(stream, self.group, *ids)
            return
        if self._ack_script is None:
            self._ack_script = self.redis.register_script(_source("stream_ack"))
        await self._ack_script(keys=[stream], args=[self.group, ",".join(ids)])

    async def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        """Append to the dead-letter stream: the event's id and JSON, where
        it came from (``src``, ``sid``), the target, attempts and error."""
        pipe = self.redis.pipeline(transaction=True)
        for letter in letters:
            record: dict[Any, Any] = {
                "id": letter.event_id,
                "src": letter.entry.source,
                "sid": letter.entry.stream_id,
                "target": letter.target,
                "n": letter.attempts,
                "err": letter.error[:1000],
                "ev": letter.body,
            }
            pipe.xadd(
                self.keys.events_dead,
                record,
                maxlen=DEAD_LETTER_MAXLEN,
                approximate=True,
            )
        await pipe.execute()

    # -- heartbeats and claims ---------------------------------------------------

    async def beat(self, ttl_ms: int, status: str) -> None:
        """Renew this dispatcher's heartbeat for ``ttl_ms``."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.sadd(self.keys.dispatchers(self.group), self.consumer)
        pipe.set(self.keys.dispatcher(self.consumer), status, px=ttl_ms)
        await pipe.execute()

    async def end_beat(self) -> None:
        """Drop the heartbeat now (a clean stop): what this dispatcher still
        holds is claimed at once by another of its group."""
        await self.redis.delete(self.keys.dispatcher(self.consumer))

    async def dead_consumers(self) -> list[str]:
        """The group's dispatchers that kept a heartbeat and whose
        heartbeat expired."""
        names = [
            clean_text(name)
            for name in await self.redis.smembers(self.keys.dispatchers(self.group))
        ]
        names = [name for name in names if name != self.consumer]
        if not names:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.exists(self.keys.dispatcher(name))
        alive = await pipe.execute()
        return [name for name, up in zip(names, alive, strict=True) if not up]

    async def claim_dead(self, dead: str) -> tuple[int, list[Entry]]:
        """Claim up to :data:`CLAIM_COUNT` events per stream pending on
        ``dead``, a dispatcher whose heartbeat expired; forget it once it
        holds none.

        :return: how many it held (-1: its heartbeat is back), and the
            entries now this dispatcher's
        """
        if self._claim_script is None:
            self._claim_script = self.redis.register_script(_source("events_claim"))
        sources = list(self.reading)
        reply = await self._claim_script(
            keys=[
                self.keys.dispatchers(self.group),
                self.keys.dispatcher(dead),
                *(self.stream_of[s] for s in sources),
            ],
            args=[self.group, dead, self.consumer, CLAIM_COUNT],
        )
        held = int(reply[0])
        entries = [
            Entry(source, sid, fields)
            for source, claimed in zip(sources, reply[1:], strict=False)
            for sid, fields in stream_entries(claimed)
        ]
        return held, entries

    async def claim_abandoned(self) -> list[Entry]:
        """Claim the events pending for ``claim_idle`` on consumers that keep
        no heartbeat (and have not read for as long)."""
        registered = {
            clean_text(name)
            for name in await self.redis.smembers(self.keys.dispatchers(self.group))
        }
        claimed: list[Entry] = []
        for source in self.reading:
            stream = self.stream_of[source]
            for info in await self.redis.xinfo_consumers(stream, self.group):
                name = clean_text(info["name"])
                if (
                    name == self.consumer
                    or name in registered
                    or not info["pending"]
                    or info["idle"] < self.claim_idle_ms
                ):
                    continue
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
                    continue
                # min_idle_time again: another dispatcher that claimed them
                # meanwhile keeps them.
                got = await self.redis.xclaim(
                    stream, self.group, self.consumer, self.claim_idle_ms, ids
                )
                claimed.extend(
                    Entry(source, sid, fields)
                    for sid, fields in stream_entries(cast(Any, got))
                )
        return claimed
