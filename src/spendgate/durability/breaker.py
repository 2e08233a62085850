"""A circuit breaker in front of Redis, so a dead store costs no request a wait.

Three states (Martin Fowler's classic breaker)::

    CLOSED ──N consecutive failures──▶ OPEN ──reset_seconds pass──▶ HALF_OPEN
      ▲                                  ▲                              │
      └────────── the probe succeeds ────┼──────── the probe fails ─────┘

- ``CLOSED``: every call goes to Redis. ``failure_threshold`` consecutive
  store failures (connection refused, timeouts, ``LOADING``, ...) open it.
- ``OPEN``: no call touches Redis; admission fails closed at once
  (``BudgetUnavailableError``) and facts go straight to the spool.
- ``HALF_OPEN``: once ``reset_seconds`` have passed, exactly one call (the
  probe) is let through; its success closes the breaker, its failure opens it
  again for another ``reset_seconds``. Every other call meanwhile fails fast.

Time is ``time.monotonic``: a wall clock that jumps (or a test's injected
budget clock) must not hold the breaker open or shut.

State changes are logged once each, never once per request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

from loguru import logger


class BreakerState(StrEnum):
    #: calls go to the store
    CLOSED = "closed"
    #: calls fail fast without touching the store
    OPEN = "open"
    #: one probe call is in flight or may start; the others fail fast
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Counts consecutive store failures and decides whether a call may go out.

    :param failure_threshold: consecutive failures that open the breaker
    :param reset_seconds: how long it stays open before one probe is let through
    :param name: what it guards, for the log lines
    :param monotonic: the time source, seconds; ``time.monotonic`` by default
        (injected by tests)
    """

    __slots__ = (
        "_failures",
        "_monotonic",
        "_opened_at",
        "_probe_in_flight",
        "failure_threshold",
        "name",
        "opened_count",
        "reset_seconds",
        "state",
    )

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_seconds: float = 1.0,
        *,
        name: str = "budget store",
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if reset_seconds < 0:
            raise ValueError("reset_seconds must not be negative")
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self.name = name
        self._monotonic = monotonic
        self.state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        #: how many times it has opened (for metrics)
        self.opened_count = 0

    @property
    def consecutive_failures(self) -> int:
        """Store failures since the last success."""
        return self._failures

    def allow(self) -> bool:
        """May a call go to the store now?

        ``True`` while closed; while open, ``True`` exactly once after
        ``reset_seconds`` (the probe: the caller must then report its outcome
        with :meth:`success`, :meth:`failure` or :meth:`abandon`).
        """
        if self.state is BreakerState.CLOSED:
            return True
        if self._probe_in_flight:
            return False
        if self._monotonic() - self._opened_at < self.reset_seconds:
            return False
        self._probe_in_flight = True
        if self.state is not BreakerState.HALF_OPEN:
            self.state = BreakerState.HALF_OPEN
            # Debug only: during a long outage this happens every reset_seconds.
            logger.debug(
                "spendgate: circuit breaker for the {} half-open: probing", self.name
            )
        return True

    def success(self) -> None:
        """The store answered: a probe's success closes the breaker."""
        if self.state is BreakerState.CLOSED:
            self._failures = 0
            return
        self._probe_in_flight = False
        self._failures = 0
        self.state = BreakerState.CLOSED
        logger.info(
            "spendgate: circuit breaker for the {} closed: the store answers again",
            self.name,
        )

    def failure(self) -> None:
        """The store did not answer (in time)."""
        self._failures += 1
        if self.state is BreakerState.CLOSED:
            if self._failures >= self.failure_threshold:
                self._open()
            return
        # A failed probe (or a late failure of a call sent before the breaker
        # opened) keeps it open and restarts the wait before the next probe.
        self._probe_in_flight = False
        self._open()

    def abandon(self) -> None:
        """The call was cancelled before its outcome was known: free the probe."""
        self._probe_in_flight = False

    def _open(self) -> None:
        was = self.state
        self._opened_at = self._monotonic()
        self.state = BreakerState.OPEN
        if was is BreakerState.CLOSED:
            self.opened_count += 1
            logger.warning(
                "spendgate: circuit breaker for the {} opened after {} consecutive "
                "failures: admission fails fast and facts are spooled; probing "
                "every {}s",
                self.name,
                self._failures,
                self.reset_seconds,
            )


class NodeBreakers:
    """One :class:`CircuitBreaker` per Redis Cluster master, made on first use.

    On a cluster a master that does not answer is unavailable for the slots
    it owns only: each call consults the breaker of the node it goes to
    (:class:`spendgate.core.cluster.ClusterScripts`), never a breaker of the
    whole store. Read as one (``state``, for metrics and health), it is the
    worst of its nodes'.

    :param failure_threshold: see :class:`CircuitBreaker`, per node
    :param reset_seconds: see :class:`CircuitBreaker`, per node
    """

    def __init__(
        self,
        failure_threshold: int,
        reset_seconds: float,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_seconds = reset_seconds
        self._monotonic = monotonic
        #: node name ("host:port") -> its breaker
        self.nodes: dict[str, CircuitBreaker] = {}

    def node(self, name: str) -> CircuitBreaker:
        """The breaker of the node ``name``."""
        breaker = self.nodes.get(name)
        if breaker is None:
            breaker = self.nodes[name] = CircuitBreaker(
                self.failure_threshold,
                self.reset_seconds,
                name=f"Redis node {name}",
                monotonic=self._monotonic,
            )
        return breaker

    @property
    def state(self) -> BreakerState:
        """Open when any node's is, half-open when any is probing, else closed."""
        states = {breaker.state for breaker in self.nodes.values()}
        for state in (BreakerState.OPEN, BreakerState.HALF_OPEN):
            if state in states:
                return state
        return BreakerState.CLOSED

    @property
    def opened_count(self) -> int:
        """How many times a node's breaker has opened, all nodes together."""
        return sum(breaker.opened_count for breaker in self.nodes.values())


class NeverOpen:
    """The store-wide breaker of a cluster store: always closed, so
    :meth:`spendgate.core.store.Store.run` never fails a call for another
    node's outage (the nodes' own breakers decide, see :class:`NodeBreakers`)."""

    __slots__ = ()

    state = BreakerState.CLOSED

    def allow(self) -> bool:
        return True

    def success(self) -> None:
        pass

    def failure(self) -> None:
        pass

    def abandon(self) -> None:
        pass
