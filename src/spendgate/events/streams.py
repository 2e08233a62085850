"""The Redis side of an event dispatcher: one consumer of a group that reads
the events streams, and the ledger streams when its targets want fact events.

Where the streams are: in every *stream home* of the deployment
(:meth:`Keys.stream_homes <spendgate.core.keys.Keys.stream_homes>`): the
root's (``{sg}``) alone with one bucket; sharded (``cluster_buckets``), the
root's and every bucket's (``{sg:<b>}``), each with its own events and
ledger streams. Each home has its own consumer group on its streams and its
own heartbeat keys (``Keys.dispatchers``, ``Keys.dispatcher``), so every
script and transaction touches one home's keys (one slot on a Redis
Cluster). An :class:`Entry` names its home; it is acknowledged and claimed
there. Dead letters all go to the root's ``events:dead``, one place for
operators.

Each group gets every event once; the dispatchers of one group share them
(each event goes to one of them). A dispatcher reads with ``XREADGROUP``
(:meth:`EventStreams.read`: how the homes are read), acknowledges what it
delivered, and claims what dead dispatchers of its group held
(:mod:`spendgate.events.claims`):

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

import asyncio
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis, RedisCluster

from spendgate.core.keys import Keys
from spendgate.events.claims import CLAIM_COUNT, Claims, DeadConsumer
from spendgate.events.entries import (
    DeadLetter,
    Entry,
    Source,
    lua_source,
    stream_of,
    stream_replies,
)
from spendgate.ledger.stream import stream_entries

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

__all__ = [
    "CLAIM_COUNT",
    "DeadConsumer",
    "DeadLetter",
    "Entry",
    "EventStreams",
    "Source",
    "stream_deleted",
    "stream_replies",
]

#: the first pause after a round of reads that found nothing (a Redis
#: Cluster with several homes: :meth:`EventStreams.read`), seconds
POLL_MIN_SECONDS = 0.01
#: the longest pause between two such rounds, seconds
POLL_MAX_SECONDS = 0.25
#: entries the dead-letter stream keeps, about (older ones are trimmed)
DEAD_LETTER_MAXLEN = 100_000


def stream_deleted(exc: redis_errors.ResponseError) -> bool:
    """A stream read from was deleted: its group is gone (``NOGROUP``), or it
    went while the read was blocked on it (Redis 7 answers the blocked read
    ``UNBLOCKED the stream key no longer exists``; the embedded store, that
    XREADGROUP "requires the key to exist"). The groups are made again and
    reading goes on."""
    text = str(exc)
    return (
        "NOGROUP" in text
        or text.startswith("UNBLOCKED")
        or "requires the key to exist" in text
    )


class EventStreams(Claims):
    """One dispatcher as a consumer of its group on the event streams of
    every stream home.

    :param redis: the dispatcher's own client (blocking reads hold a
        connection)
    :param keys: the deployment's keys (``keys_for``: the root's, whose
        ``stream_homes()`` are read)
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
        #: every stream home: an entry's ``home`` is an index of these
        self.homes = keys.stream_homes()
        self.group = group
        self.consumer = consumer
        self.batch_size = batch_size
        self.claim_idle_ms = claim_idle_ms
        #: stream name -> (home, source)
        self._origin: dict[str, tuple[int, Source]] = {
            stream_of(home, source): (index, source)
            for index, home in enumerate(self.homes)
            for source in ("events", "ledger")
        }
        #: one XREADGROUP reads every home: one home, or a single Redis
        self.one_read = len(self.homes) == 1 or not isinstance(redis, RedisCluster)
        self._pause = POLL_MIN_SECONDS
        #: the streams whose group exists (created by :meth:`ensure_groups`)
        self.reading: list[Source] = []
        self._ack_script: AsyncScript | None = None
        self._claim_script: AsyncScript | None = None

    # -- groups ------------------------------------------------------------

    async def ensure_groups(self, facts: bool) -> None:
        """Create the group on every home's events stream, and ledger stream
        when ``facts``, unless they exist. A new group starts at the oldest
        entry the stream still holds."""
        wanted: list[Source] = ["events", "ledger"] if facts else ["events"]
        new = [source for source in wanted if source not in self.reading]
        if not new:
            return
        pipe = self.redis.pipeline(transaction=False)  # (one slot per command)
        for source in new:
            for home in self.homes:
                pipe.xgroup_create(
                    stream_of(home, source), self.group, id="0", mkstream=True
                )
        for outcome in await pipe.execute(raise_on_error=False):
            if isinstance(outcome, Exception) and "BUSYGROUP" not in str(outcome):
                raise outcome
        self.reading.extend(new)

    def groups_lost(self) -> None:
        """A stream (and its group) was deleted: create them again next time."""
        self.reading = []

    # -- reading -------------------------------------------------------------

    async def read(self, start: str, block_ms: int | None = None) -> list[Entry]:
        """One batch from every stream read: ``"0"`` for this consumer's
        unacknowledged entries, ``">"`` for new ones (waiting up to
        ``block_ms`` for one when there are none).

        On a single Redis (and with one home, so always unsharded) this is
        one ``XREADGROUP`` over every home's streams, blocking on its own
        connection: one server takes keys of any slot in one call, and an
        entry arriving in any home ends the wait at once. A Redis Cluster
        refuses a read over streams of several slots (``CROSSSLOT``), and one
        blocked read per home would hold a connection per home (up to 1025),
        so there the homes are read in rounds: a pipeline of one
        non-blocking read per home (a round trip per master), and after a
        round that found nothing a pause, from :data:`POLL_MIN_SECONDS`
        doubling to :data:`POLL_MAX_SECONDS` while nothing comes (an event
        arriving in an idle cluster waits up to that pause), until
        ``block_ms`` has passed.
        """
        if self.one_read:
            streams = {stream_of(h, s): start for h in self.homes for s in self.reading}
            reply = await self.redis.xreadgroup(
                self.group,
                self.consumer,
                streams,  # type: ignore[arg-type]
                count=self.batch_size,
                block=block_ms,
            )
            return self._entries(stream_replies(reply))
        deadline = time.monotonic() + (block_ms or 0) / 1000
        while True:
            pipe = self.redis.pipeline(transaction=False)
            for home in self.homes:
                pipe.xreadgroup(
                    self.group,
                    self.consumer,
                    {stream_of(home, s): start for s in self.reading},
                    count=self.batch_size,
                )
            replies = await pipe.execute()
            found = self._entries(p for reply in replies for p in stream_replies(reply))
            left = deadline - time.monotonic()
            if found or left <= 0:
                if found:
                    self._pause = POLL_MIN_SECONDS
                return found
            await asyncio.sleep(min(self._pause, left))
            self._pause = min(POLL_MAX_SECONDS, self._pause * 2)

    def _entries(self, replies: Iterable[tuple[str, Any]]) -> list[Entry]:
        found: list[Entry] = []
        for name, entries in replies:
            home, source = self._origin[name]
            found.extend(
                Entry(source, sid, fields, home)
                for sid, fields in stream_entries(entries)
            )
        return found

    # -- acknowledging -----------------------------------------------------------

    async def ack(self, source: Source, ids: Sequence[str], home: int = 0) -> None:
        """Acknowledge delivered entries of one home's stream. An events
        stream entry is deleted once every group has acknowledged it; a
        ledger entry is left to the flusher."""
        if not ids:
            return
        stream = stream_of(self.homes[home], source)
        if source == "ledger":
            await self.redis.xack(stream, self.group, *ids)
            return
        if self._ack_script is None:
            self._ack_script = self.redis.register_script(lua_source("stream_ack"))
        await self._ack_script(keys=[stream], args=[self.group, ",".join(ids)])

    async def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        """Append to the root's dead-letter stream: the event's id and JSON,
        where it came from (``src``, ``sid``, and sharded the stream's key,
        ``stream``), the target, attempts and error."""
        pipe = self.redis.pipeline(transaction=True)
        for letter in letters:
            entry = letter.entry
            record: dict[Any, Any] = {
                "id": letter.event_id,
                "src": entry.source,
                "sid": entry.stream_id,
                "target": letter.target,
                "n": letter.attempts,
                "err": letter.error[:1000],
                "ev": letter.body,
            }
            if len(self.homes) > 1:
                record["stream"] = stream_of(self.homes[entry.home], entry.source)
            pipe.xadd(
                self.keys.events_dead,
                record,
                maxlen=DEAD_LETTER_MAXLEN,
                approximate=True,
            )
        await pipe.execute()
