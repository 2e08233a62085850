"""A flusher's heartbeat: a key with a TTL, renewed while the flusher works.

As arq's ``Worker.record_health`` does for a worker, but per consumer: the
key (``Keys.flusher``) holds a status line for operators and expires
``ttl_seconds`` after the last renewal, which happens every third of that
while the event loop runs. A flusher that is killed or stopped stops
renewing; once its key has expired, the next pass of any other flusher
claims its pending entries (:meth:`StreamConsumer.claim_dead`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from loguru import logger
from redis import exceptions as redis_errors

from spendgate.ledger.stream import REDIS_UNAVAILABLE

#: the heartbeat's TTL by default, seconds: how long the entries of a killed
#: flusher wait before another flusher claims them
DEFAULT_HEARTBEAT_SECONDS = 10.0


class Beating(Protocol):
    """A consumer that keeps a heartbeat key: a flusher's
    :class:`~spendgate.ledger.stream.StreamConsumer`, an event dispatcher's
    :class:`~spendgate.events.streams.EventStreams`."""

    async def beat(self, ttl_ms: int, status: str) -> None:
        """Renew the heartbeat for ``ttl_ms``, holding ``status``."""

    async def end_beat(self) -> None:
        """Drop the heartbeat now (a clean stop)."""


class Heartbeat:
    """Renews one consumer's heartbeat in the background while it runs.

    :param reader: the consumer whose heartbeat it is
    :param ttl_seconds: the key's TTL; renewed every third of it
    :param status: the text the key holds, asked at every renewal
    """

    def __init__(
        self,
        reader: Beating,
        ttl_seconds: float,
        status: Callable[[], str],
    ) -> None:
        self.reader = reader
        self.ttl_ms = max(1, int(ttl_seconds * 1000))
        self.interval_seconds = ttl_seconds / 3
        self.status = status
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    @property
    def running(self) -> bool:
        return self._task is not None

    async def beat(self) -> bool:
        """Renew the key once; ``False`` when Redis did not take it (it is
        tried again at the next renewal, and the pass reports the outage)."""
        try:
            await self.reader.beat(self.ttl_ms, self.status())
        except (redis_errors.RedisError, *REDIS_UNAVAILABLE) as exc:
            logger.debug("spendgate heartbeat failed: {!r}", exc)
            return False
        return True

    async def start(self) -> None:
        """Beat now, then every ``ttl_seconds / 3`` until :meth:`stop`."""
        if self._task is not None:
            return
        await self.beat()
        self._stop.clear()
        self._task = asyncio.create_task(self._renew())

    async def stop(self, *, end: bool = True) -> None:
        """Stop renewing.

        :param end: drop the key now (a clean stop: what the consumer still
            holds is claimed at once by the next pass of another flusher);
            otherwise it expires ``ttl_seconds`` after the last renewal
        """
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if end:
            try:
                await self.reader.end_beat()
            except (redis_errors.RedisError, *REDIS_UNAVAILABLE):
                pass  # it expires by itself

    @contextlib.asynccontextmanager
    async def kept(self) -> AsyncIterator[None]:
        """Beat during the block (unless already beating); the key then
        lives on for its TTL, so passes run one after another keep it."""
        if self.running:
            yield
            return
        await self.start()
        try:
            yield
        finally:
            await self.stop(end=False)

    async def _renew(self) -> None:
        while not self._stop.is_set():
            # asyncio.wait on the event, not wait_for: see Flusher._sleep.
            waiter = asyncio.ensure_future(self._stop.wait())
            try:
                await asyncio.wait({waiter}, timeout=self.interval_seconds)
            finally:
                waiter.cancel()
            if not self._stop.is_set():
                await self.beat()
