"""The event dispatcher: reads the event streams, delivers, retries,
dead-letters.

One dispatcher is one consumer of a consumer group on the streams of every
stream home (:mod:`spendgate.events.streams`: the root's, and sharded each
bucket's). A pass reads a batch (waiting until something arrives:
:meth:`~spendgate.events.streams.EventStreams.read`), turns each entry into
an :class:`~spendgate.events.model.Event`, delivers it to every target that
wants its type (handlers, webhooks), each retried with backoff and
dead-lettered to ``<prefix>:{sg}:events:dead`` after the last attempt, and
only then acknowledges the batch. Delivery is therefore **at least once**: a
dispatcher killed before its acknowledgement leaves the events pending, and
they are delivered again, with the same ids, by the next dispatcher of its
group (at once when its heartbeat expires) or by itself when it restarts
with the same consumer name. Within one dispatcher, events are delivered
one at a time, each stream's in its order (the homes' streams interleave).

Nothing here runs on the hot path: the manager runs a dispatcher as a task
of its own with a client of its own (``budget.events.on``), and
``spendgate events run`` in a process of its own.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from loguru import logger
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from spendgate.config import BudgetConfig
from spendgate.core.shards import keys_for
from spendgate.errors import PoisonEntryError
from spendgate.events.clients import BLOCK_SECONDS, dispatcher_client
from spendgate.events.delivery import RetryPolicy, deliver
from spendgate.events.entries import DeadLetter, Entry, Source, event_of
from spendgate.events.streams import EventStreams, stream_deleted
from spendgate.events.targets import EventHandlers, Target, wants_facts
from spendgate.ledger.heartbeat import Heartbeat
from spendgate.ledger.stream import REDIS_UNAVAILABLE


class Stopping(Exception):
    """The dispatcher was asked to stop in the middle of a delivery."""


def _honour_lost_cancel() -> None:
    # See spendgate.ledger.flusher._honour_lost_cancel: on Python 3.11 a
    # timeout can swallow a cancellation; checked once per pass.
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"


class EventDispatcher:
    """Delivers events to handlers and webhooks, at least once.

    Run it as a task (``task = asyncio.create_task(dispatcher.run())``;
    :meth:`stop` or cancel it to end) or as ``spendgate events run``. A
    ``BudgetManager`` runs one by itself while handlers are registered with
    ``budget.events.on``.

    :param config: the settings (``redis_url``, ``key_prefix``,
        ``events_*``); ``BudgetConfig()`` (environment) when omitted
    :param handlers: a registry whose handlers get the events (read anew on
        every delivery, so handlers registered later count)
    :param targets: other targets (webhooks)
    :param redis: a client to use instead of connecting from ``config``;
        blocking reads hold one of its connections
    :param close_redis: close the client in :meth:`aclose` (default: only
        when it was made here)
    :param group: the consumer group (default ``events_group``); each group
        gets every event, the dispatchers of one group share them
    :param consumer: this dispatcher's name, unique per running dispatcher
        (default ``<host>-<pid>-<random>``); reuse it on restart to take
        back at once what it held
    """

    def __init__(
        self,
        config: BudgetConfig | None = None,
        *,
        handlers: EventHandlers | None = None,
        targets: Sequence[Target] = (),
        redis: Redis | None = None,
        close_redis: bool | None = None,
        group: str | None = None,
        consumer: str | None = None,
        block_seconds: float = BLOCK_SECONDS,
    ) -> None:
        self.config = config if config is not None else BudgetConfig()
        cfg = self.config
        self.handlers = handlers
        self.extra_targets = list(targets)
        self.group = group or cfg.events_group
        self.consumer = consumer or default_consumer()
        self.policy = RetryPolicy.from_config(cfg)
        self.block_ms = max(1, int(block_seconds * 1000))
        if redis is None:
            redis = dispatcher_client(cfg, block_seconds)
            close_redis = True if close_redis is None else close_redis
        self._redis = redis
        self._close_redis = bool(close_redis)
        self.streams = EventStreams(
            redis,
            keys_for(cfg.key_prefix, cfg.cluster_buckets),
            group=self.group,
            consumer=self.consumer,
            batch_size=cfg.events_batch_size,
            claim_idle_ms=max(1, int(cfg.events_claim_idle_seconds * 1000)),
        )
        self.heartbeat = Heartbeat(
            self.streams, cfg.events_heartbeat_seconds, self._status
        )
        self._claim_every = cfg.events_heartbeat_seconds / 2
        self._next_claim = 0.0
        #: read this consumer's own pending entries first (start, or after a
        #: pass that failed before acknowledging)
        self._recover = True
        self._stopping = False
        self._wake = asyncio.Event()
        self._closed = False
        #: deliveries that a target took
        self.delivered_total = 0
        #: deliveries dead-lettered after the last attempt
        self.dead_lettered_total = 0
        #: the last failure of the loop itself (Redis), as text
        self.last_error: str | None = None

    # -- targets -------------------------------------------------------------

    def targets(self) -> list[Target]:
        """Every target now: the registered handlers, then the others."""
        found: list[Target] = []
        if self.handlers is not None:
            found.extend(self.handlers.targets())
        found.extend(self.extra_targets)
        return found

    @property
    def wants_facts(self) -> bool:
        """Whether a target wants fact events (the ledger stream is read)."""
        return wants_facts(t for target in self.targets() for t in target.types())

    # -- the loop ------------------------------------------------------------------

    async def run(self) -> None:
        """Deliver until :meth:`stop` or cancelled; closes what it opened.

        While Redis is unreachable it retries with exponential backoff (up
        to 30 s); nothing is acknowledged meanwhile.
        """
        failures = 0
        try:
            await self.heartbeat.start()
            while not self._stopping:
                _honour_lost_cancel()
                try:
                    await self.run_once(block=True)
                except Stopping:
                    break
                except (*REDIS_UNAVAILABLE, redis_errors.ResponseError) as exc:
                    failures += 1
                    self._recover = True
                    if isinstance(exc, redis_errors.ResponseError) and not isinstance(
                        exc, REDIS_UNAVAILABLE
                    ):
                        if not stream_deleted(exc):
                            raise
                        self.streams.groups_lost()
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    delay = min(30.0, 0.1 * 2 ** min(failures, 10))
                    logger.warning(
                        "spendgate events {}: cannot read the streams ({}); "
                        "retrying in {:.1f}s",
                        self.consumer,
                        self.last_error,
                        delay,
                    )
                    await self._pause(delay)
                    continue
                failures = 0
                self.last_error = None
        finally:
            self._stopping = False
            await self.heartbeat.stop()
            await self.aclose()

    def stop(self) -> None:
        """Make :meth:`run` return: at once from a blocking read, else after
        the event in delivery (one that is still being retried stays
        pending, and is delivered again)."""
        self._stopping = True
        self._wake.set()

    async def run_once(self, *, block: bool = False) -> int:
        """One pass: this consumer's own pending entries (at start), those
        of dead dispatchers (now and then), then one batch of new entries
        (waiting for one when ``block``). Returns the entries handled.

        :raise Stopping: :meth:`stop` was called during a delivery
        """
        await self.streams.ensure_groups(self.wants_facts)
        handled = 0
        if self._recover:
            while batch := await self.streams.read("0"):
                handled += await self._handle(batch)
            self._recover = False
        if time.monotonic() >= self._next_claim:
            handled += await self._claim()
            self._next_claim = time.monotonic() + self._claim_every
        batch = await (self._read_blocking() if block else self.streams.read(">"))
        return handled + await self._handle(batch)

    async def drain(self) -> int:
        """Deliver everything there is, including what arrives meanwhile,
        until a pass finds nothing; for tests and ``--once``."""
        total = 0
        self._next_claim = 0.0
        while True:
            handled = await self.run_once()
            total += handled
            if not handled:
                return total

    async def aclose(self) -> None:
        """Close the targets' clients (webhooks), and the Redis client if it
        is this dispatcher's."""
        if self._closed:
            return
        self._closed = True
        for target in self.extra_targets:
            close = getattr(target, "aclose", None)
            if close is not None:
                await close()
        if self._close_redis:
            await self._redis.aclose()

    # -- inside a pass ---------------------------------------------------------------

    async def _read_blocking(self) -> list[Entry]:
        """New entries, waiting up to the block time; cut short by stop()."""
        if self._stopping:
            return []
        read = asyncio.ensure_future(self.streams.read(">", self.block_ms))
        waiter = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({read, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            if not read.done():
                # Stopping: entries Redis gave meanwhile stay pending on this
                # consumer; its heartbeat ends, and another claims them.
                read.cancel()
                await asyncio.gather(read, return_exceptions=True)
        if read.cancelled():
            return []
        return read.result()

    async def _claim(self) -> int:
        """Claim and deliver what dead dispatchers of the group held."""
        handled = 0
        for dead in await self.streams.dead_consumers():
            for _ in range(1000):  # bounded: a page per stream at a time
                held, batch = await self.streams.claim_dead(dead)
                if batch:
                    logger.info(
                        "spendgate events {}: claimed {} events of dispatcher {}, "
                        "whose heartbeat expired",
                        self.consumer,
                        len(batch),
                        dead.name,
                    )
                    handled += await self._handle(batch)
                if held <= 0:
                    break
        abandoned = await self.streams.claim_abandoned()
        if abandoned:
            logger.info(
                "spendgate events {}: claimed {} events idle on other consumers",
                self.consumer,
                len(abandoned),
            )
            handled += await self._handle(abandoned)
        return handled

    async def _handle(self, batch: list[Entry]) -> int:
        """Deliver a batch in order, then dead-letter what failed and
        acknowledge what was done (also when stopped part-way: the rest
        stays pending)."""
        done: dict[tuple[int, Source], list[str]] = {}
        letters: list[DeadLetter] = []
        try:
            for entry in batch:
                if self._stopping:
                    raise Stopping
                letters.extend(await self._deliver_entry(entry))
                done.setdefault((entry.home, entry.source), []).append(entry.stream_id)
        finally:
            # Dead letters are written before their entries are acknowledged.
            if letters:
                await self.streams.dead_letter(letters)
                self.dead_lettered_total += len(letters)
            for (home, source), ids in done.items():
                await self.streams.ack(source, ids, home)
        return len(batch)

    async def _deliver_entry(self, entry: Entry) -> list[DeadLetter]:
        """Deliver one entry's event; the dead letters it leaves."""
        try:
            event = event_of(entry)
        except PoisonEntryError as exc:
            logger.error(
                "spendgate events: entry {} of the {} stream is no event, "
                "dead-lettered: {}",
                entry.stream_id,
                entry.source,
                exc,
            )
            return [DeadLetter(entry, entry.stream_id, b"", "-", 0, str(exc))]
        if event is None:
            return []
        targets = [t for t in self.targets() if t.wants(event.type)]
        if not targets:
            return []
        failures = await deliver(event, targets, self.policy, self._pause_or_stop)
        self.delivered_total += len(targets) - len(failures)
        letters = []
        for failure in failures:
            logger.error(
                "spendgate events: {} did not take {} {} after {} attempts ({}); "
                "dead-lettered",
                failure.target.name,
                event.type,
                event.id,
                failure.attempts,
                failure.error,
            )
            letters.append(
                DeadLetter(
                    entry,
                    event.id,
                    event.to_json(),
                    failure.target.name,
                    failure.attempts,
                    failure.error,
                )
            )
        return letters

    # -- waiting ----------------------------------------------------------------------

    async def _pause(self, seconds: float) -> None:
        """Sleep, cut short by stop()."""
        # asyncio.wait on a task, not wait_for: see Flusher._sleep.
        waiter = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({waiter}, timeout=seconds)
        finally:
            waiter.cancel()

    async def _pause_or_stop(self, seconds: float) -> None:
        """The wait between two attempts; raises :class:`Stopping` when the
        dispatcher is stopped meanwhile (the event stays pending)."""
        await self._pause(seconds)
        if self._stopping:
            raise Stopping

    def _status(self) -> str:
        """The heartbeat's text, for an operator reading the key."""
        return (
            f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} group={self.group}"
            f" delivered={self.delivered_total}"
            f" dead_lettered={self.dead_lettered_total}"
        )
