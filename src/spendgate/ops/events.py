"""``budget.events``: handlers, and the dispatcher the manager runs for them.

Registering a handler (``budget.events.on(type, handler)``) is the only
set-up: the manager then runs an :class:`~spendgate.events.dispatcher.
EventDispatcher` as a task of its own, on a Redis connection of its own, in
the manager's event loop, from the first registration made in a running
loop (or, for handlers registered before any loop runs, from the manager's
first call or :meth:`open`) until :meth:`aclose`. A manager with no handler
runs nothing and imports nothing of it: the hot path never pays for events.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from loguru import logger

from spendgate.core.store import ClientState
from spendgate.ops.base import Operations

if TYPE_CHECKING:
    from spendgate.events.dispatcher import EventDispatcher
    from spendgate.events.targets import EventHandlers

#: how long closing the manager waits for its dispatcher to finish the event
#: in delivery before cancelling it (an event cut short stays pending)
STOP_GRACE_SECONDS = 5.0


class Events(Operations):
    """The manager's event handlers and their dispatcher."""

    _events: EventHandlers | None = None
    _dispatcher: EventDispatcher | None = None
    _dispatch_task: asyncio.Task[None] | None = None

    @property
    def events(self) -> EventHandlers:
        """The event handlers: ``budget.events.on("credits.cap_reached",
        handler)`` (sync or async; ``"*"`` for every type) starts delivery
        with no other set-up. See :class:`~spendgate.events.targets.EventHandlers`."""
        if self._events is None:
            # Imported on first use: a manager with no handler never loads it.
            from spendgate.events.targets import EventHandlers

            self._events = EventHandlers(
                self._start_events,
                timeout_seconds=self.config.events_handler_timeout_seconds,
            )
        return self._events

    @property
    def event_dispatcher(self) -> EventDispatcher | None:
        """The dispatcher this manager runs (``None`` while it runs none)."""
        return self._dispatcher

    def _start_events(self) -> None:
        """Start the dispatcher when handlers are registered, a loop runs and
        the manager is not closed (and none runs already)."""
        if not self._events or self._store.state is ClientState.CLOSED:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # registered before any loop: the first call starts it
        task = self._dispatch_task
        if task is not None and not task.done():
            return
        from spendgate.events.clients import sibling_client
        from spendgate.events.dispatcher import EventDispatcher

        client = self._store.client
        redis, close = None, None
        if client is not None and not self._store.owns_client:
            # The caller's client: a pool of our own to the same server.
            try:
                redis, close = sibling_client(client), True
            except TypeError:
                redis, close = client, False
        dispatcher = EventDispatcher(
            self.config, handlers=self._events, redis=redis, close_redis=close
        )
        self._dispatcher = dispatcher
        self._dispatch_task = loop.create_task(
            dispatcher.run(), name="spendgate-events"
        )
        self._dispatch_task.add_done_callback(_report_end)

    async def _stop_events(self) -> None:
        """Stop the dispatcher: the event in delivery is finished (within
        :data:`STOP_GRACE_SECONDS`), what is left stays pending."""
        task, self._dispatch_task = self._dispatch_task, None
        dispatcher = self._dispatcher
        if task is None or dispatcher is None:
            return
        dispatcher.stop()
        done, _ = await asyncio.wait({task}, timeout=STOP_GRACE_SECONDS)
        if not done:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _report_end(task: asyncio.Task[None]) -> None:
    """Log a dispatcher that ended on an error (a bug: Redis outages are
    retried inside)."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        logger.opt(exception=exc).error(
            "spendgate events: the dispatcher stopped on an error"
        )
