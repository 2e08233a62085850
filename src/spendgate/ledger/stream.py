"""The Redis side of the flusher: one consumer of the ledger stream's group.

It reads entries (``XREADGROUP``), claims those idle on dead consumers
(``XAUTOCLAIM``), acknowledges and deletes a stored batch in one script
(keeping what another group, the event dispatcher's, has not acknowledged yet),
moves entries Postgres refuses to the dead-letter stream, and measures the
backlog. What to do with the entries is :class:`spendgate.ledger.flusher.Flusher`'s.

Heartbeats: a flusher keeps a key with a TTL (``Keys.flusher``, arq's
``Worker.record_health`` per consumer) and its name in ``Keys.flushers``. A
flusher listed there whose key has expired is dead: its pending entries are
claimed at once (``ledger_claim.lua``), not after the claim-idle time, which
still applies to consumers that never kept a heartbeat.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from redis import exceptions as redis_errors
from redis.asyncio import Redis, RedisCluster

from spendgate.core.connection import client_for, embedded_client
from spendgate.core.keys import Keys
from spendgate.core.scripts import lua_dir
from spendgate.ledger.entries import RawFields, StreamEntry, clean_text

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

#: Redis errors that mean "not there right now": retried like a Postgres outage
#: (on a cluster, redis-py's RedisCluster says so in errors of its own: no node
#: answered, a slot no master serves, CLUSTERDOWN after its own retries)
REDIS_UNAVAILABLE = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    ConnectionError,
    TimeoutError,
    OSError,
    redis_errors.RedisClusterUnreachableError,
    redis_errors.SlotNotCoveredError,
    redis_errors.ClusterDownError,
)


class Backlog(NamedTuple):
    """What the stream holds that Postgres does not have yet."""

    #: entries in the stream: delivered to a flusher or not, none yet in Postgres
    entries: int
    #: of those, delivered to a flusher and not acknowledged yet
    pending: int
    #: age of the oldest entry in seconds by the Redis clock; 0.0 when empty
    oldest_age_seconds: float


def id_tuple(stream_id: str) -> tuple[int, int]:
    """A stream id as ``(milliseconds, sequence)``, ordered as Redis orders them."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def _raw_fields(raw: Any) -> RawFields | None:
    if not raw:
        return None
    if not isinstance(raw, dict):
        # a flat [k, v, k, v, ...] list (RESP2 without redis-py's parsing)
        raw = {raw[i]: raw[i + 1] for i in range(0, len(raw) - 1, 2)}
    key = next(iter(raw))
    if isinstance(key, str):
        # a client with decode_responses=True: back to bytes, the slow way
        return {
            k.encode(): v.encode() if isinstance(v, str) else v for k, v in raw.items()
        }
    return cast(RawFields, raw)


def stream_entries(raw: Any) -> list[StreamEntry]:
    """The entries of an ``XREADGROUP``/``XAUTOCLAIM`` reply."""
    # Fields stay bytes: Postgres decodes them (raw_row, sql.INSERT).
    return [(clean_text(sid), _raw_fields(fields)) for sid, fields in raw]


#: entries claimed from a dead flusher at most per script call
CLAIM_COUNT = 1000


@cache
def _source(name: str) -> bytes:
    return (lua_dir() / f"{name}.lua").read_bytes()


class StreamConsumer:
    """One consumer of the ledger stream's consumer group.

    :param redis_url: where to connect on first use when ``redis`` is not
        given; ``None`` for the embedded store
    :param cluster: ``redis_url`` is a node of a Redis Cluster
    :param redis: an existing client (not closed by :meth:`aclose`)
    :param keys: the deployment's keys (the stream, its dead letters, the
        heartbeats)
    :param group: the consumer group
    :param consumer: this consumer's name in the group
    :param batch_size: entries read at most per call
    :param claim_idle_ms: entries pending this long on another consumer are
        claimed
    :param owner: the consumer whose client this one uses (a sibling made by
        :meth:`sibling`, reading another stream home of the deployment)
    """

    def __init__(
        self,
        redis_url: str | None,
        redis: Redis | None,
        *,
        keys: Keys,
        group: str,
        consumer: str,
        batch_size: int,
        claim_idle_ms: int,
        cluster: bool = False,
        owner: StreamConsumer | None = None,
    ) -> None:
        self.redis_url = redis_url
        self.cluster = cluster
        self.keys = keys
        self.stream = keys.ledger
        #: where entries Postgres refuses as data are moved, with the error
        self.dead_letter_stream = keys.ledger_dead
        self.group = group
        self.consumer = consumer
        #: this consumer's heartbeat key
        self.heartbeat_key = keys.flusher(consumer)
        self.batch_size = batch_size
        self.claim_idle_ms = claim_idle_ms
        self._redis = redis
        self._owns_redis = redis is None and owner is None
        self._owner = owner
        #: the owner's client this sibling last used (its scripts are its)
        self._owner_client: Redis | None = None
        self._ack: AsyncScript | None = None
        self._claim: AsyncScript | None = None
        self._group_ready = False
        #: another consumer group reads the stream too (the event
        #: dispatcher's), as of the last acknowledgement; ``None``: unknown yet
        self.shared: bool | None = None

    def sibling(self, keys: Keys) -> StreamConsumer:
        """A consumer of the same group, with the same name, of another
        stream home's streams (``keys``), sharing this one's client: one
        connection (pool) however many buckets a deployment has."""
        return StreamConsumer(
            self.redis_url,
            None,
            keys=keys,
            group=self.group,
            consumer=self.consumer,
            batch_size=self.batch_size,
            claim_idle_ms=self.claim_idle_ms,
            cluster=self.cluster,
            owner=self,
        )

    @property
    def redis(self) -> Redis:
        """The client, connected on first use (a sibling's: its owner's)."""
        if self._owner is not None:
            client = self._owner.redis
            if client is not self._owner_client:
                # The owner connected anew: the scripts were registered on
                # the old client, and the group may be gone with its Redis.
                self._owner_client = client
                self._ack = self._claim = None
                self._group_ready = False
            return client
        if self._redis is None:
            if self.redis_url:
                # Not the hot path: batches are large, so generous timeouts.
                self._redis = client_for(
                    self.redis_url,
                    cluster=self.cluster,
                    socket_timeout=30,
                    socket_connect_timeout=5,
                )
            else:
                self._redis = embedded_client()
        return self._redis

    async def aclose(self) -> None:
        """Close the client if it was ours (a given one, or a sibling's
        owner's, stays open)."""
        if self._redis is not None and self._owns_redis:
            await self._redis.aclose()
            self._redis = None
            self._ack = self._claim = None
        self._group_ready = False

    async def ensure_group(self) -> None:
        """Create the stream and the consumer group unless they exist."""
        if self._group_ready:
            return
        try:
            await self.redis.xgroup_create(
                self.stream, self.group, id="0", mkstream=True
            )
        except redis_errors.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def group_lost(self) -> None:
        """The stream (and its group) was deleted: create it again next time."""
        self._group_ready = False

    async def read(self, start: str) -> list[StreamEntry]:
        """One batch: ``"0"`` for this consumer's unacknowledged entries,
        ``">"`` for new ones."""
        reply = await self.redis.xreadgroup(
            self.group, self.consumer, {self.stream: start}, count=self.batch_size
        )
        if not reply:
            return []
        if isinstance(reply, dict):  # RESP3
            raw = next(iter(reply.values()))
            raw = raw[0] if raw and isinstance(raw[0], list) else raw
        else:
            raw = reply[0][1]
        return stream_entries(raw)

    async def claim(self, start: str) -> tuple[str, list[StreamEntry]]:
        """One page of entries idle on other consumers, now this one's; and
        where the next page starts (``"0-0"``: the sweep is complete)."""
        reply = await self.redis.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            min_idle_time=self.claim_idle_ms,
            start_id=start,
            count=self.batch_size,
        )
        return clean_text(reply[0]), stream_entries(reply[1])

    async def forget_idle_consumers(self) -> None:
        """Drop the group's idle consumers that hold nothing (dead flushers).

        A live one dropped by mistake is recreated by its next read.
        """
        for info in await self.redis.xinfo_consumers(self.stream, self.group):
            name = clean_text(info["name"])
            if (
                name != self.consumer
                and not info["pending"]
                and (info["idle"] > self.claim_idle_ms)
            ):
                await self.redis.xgroup_delconsumer(self.stream, self.group, name)

    async def last_id(self) -> tuple[int, int] | None:
        """The id of the stream's newest entry; ``None`` when it is empty."""
        last = await self.redis.xrevrange(self.stream, "+", "-", count=1)
        if not last:
            return None
        return id_tuple(clean_text(cast(bytes, last[0][0])))

    async def ack(self, ids: list[str]) -> None:
        """Acknowledge and delete entries, in one atomic script.

        While another consumer group reads the stream too (the event
        dispatcher's), an entry is deleted only once every group has
        acknowledged it (``stream_ack.lua``); :attr:`shared` says so, and
        :meth:`sweep` deletes what the others acknowledged since.
        """
        if self._ack is None:
            self._ack = self.redis.register_script(_source("stream_ack"))
        _, groups = await self._ack(
            keys=[self.stream], args=[self.group, ",".join(ids)]
        )
        self.shared = int(groups) > 1

    async def sweep(self) -> None:
        """Delete the entries every group has acknowledged, this one's earlier
        and the others' since (nothing while no other group reads the stream)."""
        await self.ack([])

    async def beat(self, ttl_ms: int, status: str) -> None:
        """Renew this consumer's heartbeat for ``ttl_ms``; ``status`` is what
        an operator reads in the key."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.sadd(self.keys.flushers, self.consumer)
        pipe.set(self.heartbeat_key, status, px=ttl_ms)
        await pipe.execute()

    async def end_beat(self) -> None:
        """Drop the heartbeat now (a clean stop): what this consumer still
        holds is claimed at once by the next flusher's pass."""
        await self.redis.delete(self.heartbeat_key)

    async def dead_consumers(self) -> list[str]:
        """The flushers that kept a heartbeat and whose heartbeat expired."""
        names = [
            name.decode("utf-8", "replace") if isinstance(name, bytes) else name
            for name in await self.redis.smembers(self.keys.flushers)
        ]
        names = [name for name in names if name != self.consumer]
        if not names:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.exists(self.keys.flusher(name))
        alive = await pipe.execute()
        return [name for name, up in zip(names, alive, strict=True) if not up]

    async def claim_dead(self, dead: str) -> tuple[int, list[StreamEntry]]:
        """Claim up to :data:`CLAIM_COUNT` entries pending on ``dead``, a
        flusher whose heartbeat expired; forget it once it holds none.

        :return: how many it held (-1: its heartbeat is back, nothing was
            claimed), and the entries now this consumer's
        """
        if self._claim is None:
            self._claim = self.redis.register_script(_source("ledger_claim"))
        held, claimed = await self._claim(
            keys=[self.stream, self.keys.flushers, self.keys.flusher(dead)],
            args=[self.group, dead, self.consumer, CLAIM_COUNT],
        )
        return int(held), stream_entries(claimed)

    async def dead_letter(self, dead: list[tuple[str, RawFields, str]]) -> None:
        """Copy entries to the dead-letter stream, each with its stream id
        (``sid``) and the error (``err``)."""
        pipe = self.redis.pipeline(transaction=True)
        for sid, fields, error in dead:
            record: dict[Any, Any] = {**fields, b"sid": sid, b"err": error[:1000]}
            pipe.xadd(self.dead_letter_stream, record)
        await pipe.execute()

    async def backlog(self) -> Backlog:
        """Entries waiting in the stream, how many are pending on a consumer,
        and the age of the oldest (by the Redis clock)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.xlen(self.stream)
        pipe.xrange(self.stream, "-", "+", count=1)
        if isinstance(self.redis, RedisCluster):
            # A cluster's pipeline takes keyed commands only: the time is
            # read apart (any master's clock; they agree to well under 1 s).
            entries, first = await pipe.execute()
            now = await self.redis.time()
            seconds, micros = next(iter(now.values())) if isinstance(now, dict) else now
        else:
            pipe.time()
            entries, first, (seconds, micros) = await pipe.execute()
        pending = 0
        if entries:
            try:
                summary = await self.redis.xpending(self.stream, self.group)
                pending = int(summary["pending"])
            except redis_errors.ResponseError:
                pending = 0  # no group yet: nothing was ever delivered
        age = 0.0
        if first:
            oldest_ms = id_tuple(clean_text(first[0][0]))[0]
            age = max(
                0.0, (int(seconds) * 1000 + int(micros) // 1000 - oldest_ms) / 1000
            )
        return Backlog(int(entries), pending, age)
