"""Events: what happened to budgets, delivered at least once.

- ``model``: :class:`Event`, and how stream entries become events
- ``targets``: :class:`EventHandlers` (``budget.events``), the handler target
- ``delivery``: attempts with exponential backoff (:class:`RetryPolicy`)
- ``entries``: stream entries and dead letters, and the event of an entry
- ``streams``: the Redis side (consumer groups on every stream home, reads,
  acks, dead letters)
- ``claims``: heartbeats, and claims on what dead dispatchers held
- ``dispatcher``: :class:`EventDispatcher`, the loop
- ``clients``: the dispatcher's own Redis client
- ``webhook``: :class:`WebhookSink` (signed POSTs) and :func:`verify_signature`
"""

from __future__ import annotations

from spendgate.events.delivery import RetryPolicy
from spendgate.events.dispatcher import EventDispatcher
from spendgate.events.model import Event
from spendgate.events.targets import EventHandlers
from spendgate.events.webhook import WebhookSink, sign, verify_signature

__all__ = [
    "Event",
    "EventDispatcher",
    "EventHandlers",
    "RetryPolicy",
    "WebhookSink",
    "sign",
    "verify_signature",
]
