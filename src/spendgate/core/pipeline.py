"""Automatic pipelining: concurrent hot-path calls share round trips.

A call made while no other is in flight goes straight to Redis
(``execute_command``): a lone caller pays nothing extra. Calls made while
others are in flight are queued and, on the next turn of the event loop, sent
together down one pooled connection as one write, their replies read back in
order. Each call is still its own EVALSHA, atomic on its own; only the
network round trip and redis-py's per-command bookkeeping are shared, which
is most of what a call costs the client under load.

Errors keep their per-call meaning: a Redis error reply (``NOSCRIPT``,
``BUSY``, ...) fails only the call it answers; a connection error or a
timeout fails every call of the batch not answered yet, as it would have
failed each of them sent alone. A caller cancelled while its batch is out
stops waiting; the command may still run, as it may when a lone call is
cancelled after it was sent.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

if TYPE_CHECKING:
    from redis.asyncio import Redis

#: a command and the future of its reply
_Pending = tuple[tuple[Any, ...], "asyncio.Future[Any]"]


class AutoPipeline:
    """Sends commands for one client, batching those issued concurrently.

    :param client: the ``redis.asyncio.Redis`` whose pool the batches use
    :param max_batch: the most commands one write carries (a larger queue is
        split, so one batch never holds a connection for long)
    """

    def __init__(self, client: Redis, max_batch: int = 256) -> None:
        self._client = client
        self._max_batch = max_batch
        self._queue: list[_Pending] = []
        # Round trips in flight, lone or batched: a call goes straight out
        # only when there are none (and nothing is queued ahead of it).
        self._in_flight = 0
        self._flush_scheduled = False
        self._senders: set[asyncio.Task[None]] = set()

    async def execute(self, *command: Any) -> Any:
        """Send one command and return its reply (or raise its error)."""
        if not self._in_flight and not self._queue:
            self._in_flight += 1
            try:
                return await self._client.execute_command(*command)  # type: ignore[no-untyped-call]
            finally:
                self._in_flight -= 1
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((command, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._flush_scheduled = False
        queue, self._queue = self._queue, []
        loop = asyncio.get_running_loop()
        for start in range(0, len(queue), self._max_batch):
            batch = queue[start : start + self._max_batch]
            sender = loop.create_task(self._send(batch))
            # Keep a reference: the loop holds tasks only weakly.
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)
            sender.add_done_callback(partial(_cancel_unanswered, batch))

    async def _send(self, batch: list[_Pending]) -> None:
        pool = self._client.connection_pool
        answered = 0
        conn = None
        self._in_flight += 1
        try:
            conn = await pool.get_connection()  # type: ignore[no-untyped-call]
            await conn.send_packed_command(conn.pack_commands([c for c, _ in batch]))
            for _, future in batch:
                try:
                    reply = await conn.read_response()
                except ResponseError as exc:
                    # An error reply answers this call only; the connection
                    # is in step, the next reply belongs to the next call.
                    answered += 1
                    if not future.done():
                        future.set_exception(exc)
                    continue
                answered += 1
                if not future.done():
                    future.set_result(reply)
        except BaseException as exc:
            # redis-py has disconnected the connection already (it does on
            # any error mid-command); the calls not answered fail alike.
            for _, future in batch[answered:]:
                if future.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            self._in_flight -= 1
            if conn is not None:
                await pool.release(conn)

    async def aclose(self) -> None:
        """Wait for the batches that are out (called before the pool closes)."""
        if self._senders:
            await asyncio.gather(*self._senders, return_exceptions=True)


def _cancel_unanswered(batch: list[_Pending], sender: asyncio.Task[None]) -> None:
    # A sender cancelled before it ran (the loop is closing) leaves no caller
    # waiting for ever.
    for _, future in batch:
        if not future.done():
            future.cancel()
