"""A flusher's consumers of every stream home of a deployment.

Sharded (``cluster_buckets`` > 1), every fact is appended to its user's
bucket's ledger stream, and the root's holds what names no bucket (facts
spooled before sharding): ``Keys.stream_homes()``. A flusher reads each
home as one consumer of the group (a :class:`StreamConsumer` per home, all
sharing the first one's client), and keeps its heartbeat in every home:
on a Redis Cluster each script's keys must share one slot, so the claim of
a dead flusher's entries (``ledger_claim.lua``: the stream, the heartbeats
set, the dead one's key) stays within the home whose stream it claims from.
Unsharded there is one home, the root's, and one consumer: as ever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Sequence

from spendgate.core.keys import Keys
from spendgate.ledger.heartbeat import Beating
from spendgate.ledger.stream import Backlog, StreamConsumer

__all__ = [
    "EveryHome",
    "beating",
    "close_all",
    "consumers_for",
    "ensure_groups",
    "total_backlog",
]


def consumers_for(
    first: StreamConsumer, homes: Sequence[Keys]
) -> tuple[StreamConsumer, ...]:
    """``first`` (the consumer of ``homes[0]``) and a sibling of it for each
    further home, all on ``first``'s client."""
    return (first, *(first.sibling(home) for home in homes[1:]))


class EveryHome:
    """The heartbeat of one flusher in every home at once (a
    :class:`~spendgate.ledger.heartbeat.Beating`): each home's claim reads
    its own heartbeat keys."""

    def __init__(self, readers: Sequence[StreamConsumer]) -> None:
        self.readers = tuple(readers)

    async def beat(self, ttl_ms: int, status: str) -> None:
        """Renew the heartbeat in every home; every home is tried even when
        one fails, then the first failure is raised."""
        await _every(reader.beat(ttl_ms, status) for reader in self.readers)

    async def end_beat(self) -> None:
        """Drop the heartbeat in every home."""
        await _every(reader.end_beat() for reader in self.readers)


async def _every(calls: Iterable[Awaitable[None]]) -> None:
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome


async def total_backlog(readers: Sequence[StreamConsumer]) -> Backlog:
    """The backlog of every home: entries and pending summed, the oldest
    entry's age the largest of any home's."""
    each = await asyncio.gather(*(reader.backlog() for reader in readers))
    return Backlog(
        sum(b.entries for b in each),
        sum(b.pending for b in each),
        max((b.oldest_age_seconds for b in each), default=0.0),
    )


def beating(readers: Sequence[StreamConsumer]) -> Beating:
    """What keeps a flusher's heartbeat: its one consumer's, unsharded (as
    before there were homes), else :class:`EveryHome`."""
    return readers[0] if len(readers) == 1 else EveryHome(readers)


async def ensure_groups(readers: Sequence[StreamConsumer]) -> None:
    """Create every home's stream and consumer group unless they exist."""
    for reader in readers:
        await reader.ensure_group()


async def close_all(readers: Sequence[StreamConsumer]) -> None:
    """Close the consumers, the siblings before the owner of their client."""
    for reader in reversed(readers):
        await reader.aclose()
