"""Prometheus metrics of the HTTP server (``GET /metrics``).

Each app gets its own ``CollectorRegistry``, so several apps in one process
(tests, or an app embedding two budgets) never collide on metric names.
With ``spendgate serve --workers N`` every worker process counts for itself
and a scrape reaches one of them: scrape each worker's own port, or run one
worker per container and let the orchestrator scale them.

Metrics:

- ``spendgate_decisions_total{endpoint, outcome, scope, window}``: admission
  decisions (``/check``, ``/v1/reserve``, ``/v1/reserve_up_to``,
  ``/v1/extend``); outcome is ``allowed``, ``refused``, ``unavailable``
  (failed closed), ``conflict`` or ``invalid`` (an extend of a lease no
  longer live counts here too);
  ``scope``/``window`` name the cap that refused (``none`` otherwise).
- ``spendgate_facts_total{endpoint, outcome}``: facts (spend, settle, credit,
  refund);
  outcome is ``recorded``, ``replayed``, ``spooled``, ``unavailable``,
  ``conflict``, ``lease_state`` or ``invalid``.
- ``spendgate_request_duration_seconds{route, method}``: latency of every
  request, by route template (``unmatched`` for unknown paths) and method
  (``other`` for one outside the HTTP methods).
- ``spendgate_redis_errors_total{kind}``: calls the store did not answer
  (``unavailable``) or answered with an unexpected error (``storage``).
- ``spendgate_ledger_backlog_entries``: entries in the Redis ledger stream
  that the flusher has not moved to Postgres yet (it deletes what it wrote);
  sharded, in every stream home's (the root's and each bucket's), summed.
- ``spendgate_spool_depth_entries``, ``spendgate_spool_oldest_age_seconds``,
  ``spendgate_spool_dead_letters``, ``spendgate_spool_quarantined``: facts
  waiting in the local spool for Redis to come back, the age of the oldest,
  facts Redis refused for good, and spool records that could not be read
  (kept with their bytes, file and offset in ``quarantine.log``) (present
  only when the budget has a spool: not on the embedded store).
- ``spendgate_breaker_state{state}``: 1 for the circuit breaker's current
  state (``closed``, ``open``, ``half_open``), 0 for the others.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, MutableMapping
from typing import Any, Protocol, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from spendgate.errors import (
    BudgetExceededError,
    BudgetUnavailableError,
    IdempotencyConflictError,
    LeaseStateError,
    SpendgateError,
    SpoolFullError,
    outcome_of,
)
from spendgate.manager import BudgetManager

__all__ = ["CONTENT_TYPE_LATEST", "LatencyMiddleware", "ServerMetrics"]

T = TypeVar("T")


class _Fact(Protocol):
    @property
    def spooled(self) -> bool: ...
    @property
    def replayed(self) -> bool: ...


#: a fact's result (a SpendRecord, a RefundResult)
F = TypeVar("F", bound=_Fact)

#: the errors an admission decision (``/check``, ``/v1/reserve``) and a fact
#: are counted under, with their label in :data:`spendgate.errors.OUTCOMES`;
#: any other error of spendgate's counts as ``invalid``, the label dashboards
#: have always seen for it
DECISION_ERRORS: tuple[type[SpendgateError], ...] = (
    BudgetExceededError,  # and BudgetUnavailableError, its subclass
    IdempotencyConflictError,
)
FACT_ERRORS: tuple[type[SpendgateError], ...] = (
    BudgetUnavailableError,
    SpoolFullError,
    IdempotencyConflictError,
    LeaseStateError,
)

# The hot path answers in well under a millisecond on a local Redis, so the
# buckets start at 250 us; the top ones catch timeouts (0.25 s by default).
_LATENCY_BUCKETS = (
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)


class ServerMetrics:
    """The metrics of one app, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "spendgate_decisions",
            "Admission decisions by outcome and by the scope and window that refused",
            ["endpoint", "outcome", "scope", "window"],
            registry=self.registry,
        )
        self.facts = Counter(
            "spendgate_facts",
            "Facts (spend, settle, credit) by outcome",
            ["endpoint", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "spendgate_request_duration_seconds",
            "Time to answer a request, by route template",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.redis_errors = Counter(
            "spendgate_redis_errors",
            "Store calls that were not answered (unavailable) or failed (storage)",
            ["kind"],
            registry=self.registry,
        )
        self.ledger_backlog = Gauge(
            "spendgate_ledger_backlog_entries",
            "Ledger stream entries not yet moved to Postgres by the flusher",
            registry=self.registry,
        )
        self.spool_depth = Gauge(
            "spendgate_spool_depth_entries",
            "Facts in the local spool waiting for Redis to come back",
            registry=self.registry,
        )
        self.spool_oldest = Gauge(
            "spendgate_spool_oldest_age_seconds",
            "Age of the oldest fact waiting in the spool (0 when empty)",
            registry=self.registry,
        )
        self.spool_dead = Gauge(
            "spendgate_spool_dead_letters",
            "Spooled facts Redis refused for good (kept aside for an operator)",
            registry=self.registry,
        )
        self.spool_quarantined = Gauge(
            "spendgate_spool_quarantined",
            "Spool records that could not be read, kept in quarantine.log",
            registry=self.registry,
        )
        self.breaker = Gauge(
            "spendgate_breaker_state",
            "1 for the circuit breaker's current state, 0 for the others",
            ["state"],
            registry=self.registry,
        )

    def decision(
        self,
        endpoint: str,
        outcome: str,
        scope: str | None = None,
        window: str | None = None,
    ) -> None:
        """Count one admission decision."""
        self.decisions.labels(
            endpoint, outcome, scope or "none", window or "none"
        ).inc()

    def fact(self, endpoint: str, outcome: str) -> None:
        """Count one fact."""
        self.facts.labels(endpoint, outcome).inc()

    async def admit(self, endpoint: str, call: Awaitable[T]) -> T:
        """Await an admission and count its decision (``allowed``, or the
        error's label); the error, if any, is raised again."""
        try:
            result = await call
        except SpendgateError as exc:
            label = _label(exc, DECISION_ERRORS)
            if label == "refused" and isinstance(exc, BudgetExceededError):
                self.decision(endpoint, label, exc.scope, exc.window)
            else:
                self.decision(endpoint, label)
            raise
        self.decision(endpoint, "allowed")
        return result

    async def record(self, endpoint: str, call: Awaitable[F]) -> F:
        """Await a fact and count it (``recorded``, ``replayed``, ``spooled``,
        or the error's label); the error, if any, is raised again."""
        try:
            result = await call
        except SpendgateError as exc:
            self.fact(endpoint, _label(exc, FACT_ERRORS))
            raise
        outcome = (
            "spooled"
            if result.spooled
            else "replayed"
            if result.replayed
            else "recorded"
        )
        self.fact(endpoint, outcome)
        return result

    async def render(self, budget: BudgetManager) -> bytes:
        """Refresh the gauges read from the store and the spool, then render.

        A store that does not answer leaves the ledger gauge at its last value
        (and counts a Redis error): a scrape must never fail for it.
        """
        try:
            backlog = 0
            for home in budget.keys.stream_homes():
                backlog += int(await budget.redis.xlen(home.ledger))
        except Exception:  # any store failure: keep the last value
            self.redis_errors.labels("unavailable").inc()
        else:
            self.ledger_backlog.set(int(backlog))
        stats = await spool_stats(budget)
        if stats is not None:
            self.spool_depth.set(stats.get("depth") or 0)
            self.spool_oldest.set(stats.get("oldest_age_seconds") or 0)
            self.spool_dead.set(stats.get("dead_letters") or 0)
            self.spool_quarantined.set(stats.get("quarantined") or 0)
        breaker = getattr(budget, "breaker", None)
        state = str(getattr(breaker, "state", "") or "")
        if state:
            for name in ("closed", "open", "half_open"):
                self.breaker.labels(name).set(1 if state == name else 0)
        return generate_latest(self.registry)


def _label(exc: SpendgateError, counted: tuple[type[SpendgateError], ...]) -> str:
    return outcome_of(exc).metric if isinstance(exc, counted) else "invalid"


def _route_of(scope: MutableMapping[str, Any]) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


#: the methods the latency metric names; any other is counted as "other"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})


def _method_of(scope: MutableMapping[str, Any]) -> str:
    # A method is any token the client sends (uvicorn's h11 takes them all),
    # before any key is checked: as a label, each new one would be a new
    # series kept for the life of the process.
    method = scope.get("method", "")
    return method if method in _METHODS else "other"


class LatencyMiddleware:
    """Times every request into the latency histogram, by route template."""

    def __init__(self, app: Any, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            self.metrics.latency.labels(_route_of(scope), _method_of(scope)).observe(
                time.perf_counter() - started
            )


async def spool_stats(budget: BudgetManager) -> dict[str, Any] | None:
    """The spool's numbers (``depth``, ``oldest_age_seconds``,
    ``dead_letters``); ``None`` when the budget has no spool.

    Read through ``budget.spool.stats()`` when it exists, else ``.depth``, so
    a scrape never fails for the spool's sake.
    """
    try:
        spool: Any = getattr(budget, "spool", None)
        if spool is None:
            return None
        stats = getattr(spool, "stats", None)
        if callable(stats):
            result = stats()
            if inspect.isawaitable(result):
                result = await result
            return dict(result)
        return {"depth": int(spool.depth)}
    except Exception:  # a spool that cannot say is reported as absent
        return None
