"""Where events go: handlers registered with ``budget.events.on``, webhooks.

A *target* takes one event and returns, or raises when it did not take it
(the dispatcher retries it, then dead-letters it). Each target is retried
on its own: a handler that fails is called again, the others that took the
event are not.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar, overload

from spendgate.core.protocol import EventType
from spendgate.errors import InvalidArgumentError
from spendgate.events.model import FACT_TYPES, Event

#: what ``budget.events.on`` takes: a function of the event, sync or async
Handler = Callable[[Event], Any]
H = TypeVar("H", bound=Handler)

#: every type, in ``on("*", handler)`` and ``events_webhook_types``
ALL = "*"
#: the event types a target may name
KNOWN_TYPES = frozenset(str(t) for t in EventType)


def check_type(event_type: str) -> str:
    """``event_type`` when it is an event type or ``"*"``.

    :raise InvalidArgumentError: any other name (a typo would never fire)
    """
    if event_type == ALL or event_type in KNOWN_TYPES:
        return event_type
    raise InvalidArgumentError(
        f"unknown event type {event_type!r}; known: {ALL}, "
        + ", ".join(sorted(KNOWN_TYPES))
    )


def wants_facts(types: Iterable[str]) -> bool:
    """Whether a target of these types needs the ledger stream read."""
    return any(t == ALL or t in FACT_TYPES for t in types)


class Target(Protocol):
    """One place events are delivered to."""

    #: how logs and dead letters name it (never a secret)
    name: str

    def wants(self, event_type: str) -> bool:
        """Whether this target gets events of ``event_type``."""

    def types(self) -> frozenset[str]:
        """The event types it gets (``"*"``: every type)."""

    async def deliver(self, event: Event) -> None:
        """Deliver one event; raise when it was not taken."""


class HandlerTarget:
    """One handler, registered for one type (or ``"*"``).

    A sync handler runs in a worker thread, so it never blocks the event
    loop the hot path runs on; an async one is awaited. Either is a failed
    attempt when it raises or takes longer than ``timeout_seconds``.
    """

    def __init__(
        self, event_type: str, handler: Handler, timeout_seconds: float = 30.0
    ) -> None:
        self.event_type = event_type
        self.handler = handler
        self.timeout_seconds = timeout_seconds
        self.is_async = inspect.iscoroutinefunction(handler) or (
            not inspect.isroutine(handler)
            and inspect.iscoroutinefunction(type(handler).__call__)
        )
        qualname = getattr(handler, "__qualname__", type(handler).__qualname__)
        self.name = f"handler {getattr(handler, '__module__', '?')}.{qualname}"

    def wants(self, event_type: str) -> bool:
        return self.event_type in (ALL, event_type)

    def types(self) -> frozenset[str]:
        return frozenset((self.event_type,))

    async def deliver(self, event: Event) -> None:
        async with asyncio.timeout(self.timeout_seconds):
            if self.is_async:
                await self.handler(event)
                return
            result = await asyncio.to_thread(self.handler, event)
            if inspect.isawaitable(result):  # a sync callable that returned one
                await result


class EventHandlers:
    """``budget.events``: the handlers the manager's dispatcher calls.

    ``on`` registers, ``off`` removes. The first registration starts the
    dispatcher (in the manager's event loop, once it is open): no other
    set-up.

    :param changed: called after every registration (the manager starts
        its dispatcher from it)
    :param timeout_seconds: one handler call's timeout
        (``events_handler_timeout_seconds``)
    """

    def __init__(
        self,
        changed: Callable[[], None] | None = None,
        *,
        timeout_seconds: float = 30.0,
    ) -> None:
        self._targets: list[HandlerTarget] = []
        self._changed = changed
        self.timeout_seconds = timeout_seconds

    @overload
    def on(self, event_type: str) -> Callable[[H], H]: ...

    @overload
    def on(self, event_type: str, handler: H) -> H: ...

    def on(self, event_type: str, handler: H | None = None) -> H | Callable[[H], H]:
        """Call ``handler(event)`` for every event of ``event_type`` (an
        :class:`~spendgate.core.protocol.EventType` value, or ``"*"`` for
        all), at least once per event; sync or async. Without ``handler``,
        a decorator.

        A handler that raises (or exceeds ``events_handler_timeout_seconds``)
        is called again with exponential backoff, up to
        ``events_max_attempts`` times, then the event is dead-lettered for it.

        :raise InvalidArgumentError: an unknown event type
        :raise TypeError: ``handler`` is not callable
        """
        check_type(event_type)
        if handler is None:

            def register(func: H) -> H:
                return self.on(event_type, func)

            return register
        if not callable(handler):
            raise TypeError(f"an event handler must be callable, not {handler!r}")
        self._targets.append(HandlerTarget(event_type, handler, self.timeout_seconds))
        if self._changed is not None:
            self._changed()
        return handler

    def off(self, event_type: str, handler: Handler) -> None:
        """Stop calling ``handler`` for ``event_type`` (nothing when it was
        not registered)."""
        self._targets = [
            t
            for t in self._targets
            if not (t.event_type == event_type and t.handler == handler)
        ]

    def targets(self) -> list[HandlerTarget]:
        """The registered handlers, in the order they were registered."""
        return list(self._targets)

    def __len__(self) -> int:
        return len(self._targets)

    def __bool__(self) -> bool:
        return bool(self._targets)
