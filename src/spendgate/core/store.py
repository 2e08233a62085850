"""The store: one Redis client, its scripts, and the breaker in front of them.

:meth:`Store.run` is the only way an operation reaches Redis: one EVALSHA,
one round trip. It also decides, in one place, what a failure means: a store
that does not answer is *unavailable* (admission fails closed, or open when
configured; a fact is handed to the spool), any other Redis error is a bug
(:class:`~spendgate.errors.StorageError`).

On a Redis Cluster (``redis_cluster=True``) :class:`ClusterStore` runs the
same :meth:`Store.run`; its scripts route each call to its key's master and
its breakers are per master (:mod:`spendgate.core.cluster`).
:func:`make_store` chooses, once, when the manager is made.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from enum import Enum
from typing import TYPE_CHECKING, Any

from loguru import logger
from redis import exceptions as redis_errors

from spendgate.config import BudgetConfig, redact_url
from spendgate.core.cluster import ClusterScripts
from spendgate.core.connection import client_for, connect
from spendgate.core.scripts import Scripts
from spendgate.durability.breaker import (
    BreakerState,
    CircuitBreaker,
    NeverOpen,
    NodeBreakers,
)
from spendgate.errors import BudgetUnavailableError, StorageError

if TYPE_CHECKING:
    from redis.asyncio import Redis

# Errors that mean "the store did not answer": admission fails closed (or
# open), facts are spooled. Any other Redis error is a bug and is raised.
UNAVAILABLE_ERRORS = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    TimeoutError,
    ConnectionError,
    OSError,
)
#: error replies that mean the same (the server is there but cannot serve):
#: the classes redis-py parses them into (it strips the code from their
#: message: "OOM ..." arrives as OutOfMemoryError("command not allowed..."))
UNAVAILABLE_REPLY_ERRORS = (
    redis_errors.OutOfMemoryError,
    redis_errors.ReadOnlyError,
    redis_errors.ClusterDownError,  # and MasterDownError, a kind of it
)
#: ... and the codes of those it leaves as a plain ResponseError ("BUSY ...")
UNAVAILABLE_REPLIES = (
    "OOM",
    "READONLY",
    "LOADING",
    "MASTERDOWN",
    "BUSY",
    "CLUSTERDOWN",
)

#: spools a fact the store did not take: ``(operation, args, info)``; answers
#: ``False`` when there is no spool (the embedded store)
KeepFact = Callable[
    [str, tuple[Any, ...], Callable[[], dict[str, Any]]], Awaitable[bool]
]


class ClientState(Enum):
    #: created, not opened yet (it opens on first use)
    UNOPENED = 1
    #: usable
    OPENED = 2
    #: closed for good
    CLOSED = 3


def unavailable(exc: BaseException) -> BudgetUnavailableError:
    """The ``BudgetUnavailableError`` of a Redis error (one of
    :data:`UNAVAILABLE_ERRORS`): its type and text, caused by it."""
    error = BudgetUnavailableError(f"{type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


class Store:
    """Redis for one manager: connected on first use, closed once.

    :param config: the settings (the Redis URL, pipelining, the breaker)
    :param constants: the scripts' configuration constants
    :param client: an existing client to use (not closed by :meth:`aclose`)
    """

    def __init__(
        self,
        config: BudgetConfig,
        constants: Mapping[str, str],
        client: Redis | None = None,
    ) -> None:
        self.config = config
        self._constants = constants
        self.client: Redis | None = client
        self.owns_client = client is None
        self.scripts: Scripts | ClusterScripts | None = None
        #: running on the in-process fakeredis (no spool: it cannot be down)
        self.embedded = False
        self.state = ClientState.UNOPENED
        #: what run() consults before each call
        self.breaker: CircuitBreaker | NeverOpen = CircuitBreaker(
            config.breaker_failure_threshold, config.breaker_reset_seconds
        )
        self._down = False
        self._failing_open = False
        #: called once the store is opened (the replay of leftovers hooks in)
        self.on_open: Callable[[], None] | None = None
        #: spools a fact the store did not take (set by the manager)
        self.keep_fact: KeepFact | None = None
        if client is not None:
            self.scripts = Scripts(client, constants)

    # -- lifecycle ---------------------------------------------------------

    def ensure_open(self) -> Scripts | ClusterScripts:
        """The scripts, connecting first when needed."""
        if self.state is ClientState.OPENED and self.scripts is not None:
            return self.scripts
        if self.state is ClientState.CLOSED:
            raise RuntimeError("Cannot reopen a BudgetManager once it has been closed.")
        if self.scripts is None:
            self.scripts = self._make_scripts()
        self.state = ClientState.OPENED
        if self.on_open is not None:
            self.on_open()
        return self.scripts

    def _make_scripts(self) -> Scripts | ClusterScripts:
        if self.client is None:
            self.client, self.embedded = connect(self.config)
            if not self.embedded:
                logger.info(
                    "spendgate: using Redis at {}", redact_url(self.config.redis_url)
                )
        # Pipelining only on a client of our own: a caller's client may
        # be shared, or not a plain redis-py one.
        pipelining = self.owns_client and not self.embedded
        return Scripts(
            self.client,
            self._constants,
            pipelining=pipelining and self.config.redis_pipelining,
        )

    @property
    def breakers(self) -> CircuitBreaker | NodeBreakers:
        """The breaker(s) to report (``.state``): the store's."""
        assert isinstance(self.breaker, CircuitBreaker)
        return self.breaker

    async def load_scripts(self) -> None:
        """Load every script now; a store that is down now is not an error."""
        scripts = self.ensure_open()
        try:
            await scripts.load_all()
        except UNAVAILABLE_ERRORS as exc:
            self.mark_down(exc)

    async def aclose(self) -> None:
        """Close the connection pool (unless the client was passed in)."""
        self.state = ClientState.CLOSED
        if self.client is not None and self.owns_client:
            await self.client.aclose()

    # -- reachability --------------------------------------------------------

    def mark_down(self, exc: BaseException) -> None:
        if not self._down:
            self._down = True
            logger.warning(
                "spendgate: budget store unreachable ({}: {})", type(exc).__name__, exc
            )

    def _mark_up(self) -> None:
        if self._down:
            self._down = False
            self._failing_open = False
            logger.info("spendgate: budget store reachable again")

    # -- one round trip ------------------------------------------------------------

    async def run(
        self,
        operation: str,
        keys: tuple[str, ...],
        args: tuple[Any, ...],
        *,
        fail_open: bool = False,
        spool_info: Callable[[], dict[str, Any]] | None = None,
    ) -> Any:
        """One EVALSHA. Store failures become :class:`BudgetUnavailableError`,
        unless the call says what to do instead (in this coroutine, not a
        wrapper around it: each await level costs the hot path):

        :param operation: a name of :data:`spendgate.core.operations.OPERATIONS`
        :param fail_open: an admission: when the store is unavailable and
            ``fail_open`` is configured, admit (return ``None``)
        :param spool_info: a fact: when the store does not take it, the call
            is spooled (durably) and ``None`` returned (replaying it is
            idempotent); called for what the spool records beside the call
        :raise SpoolFullError: a fact could not be spooled
        """
        scripts = self.ensure_open()
        breaker = self.breaker
        failure: BudgetUnavailableError
        busy = False
        try:
            if breaker.state is not BreakerState.CLOSED and not breaker.allow():
                raise BudgetUnavailableError(
                    "circuit breaker open after repeated failures"
                )
            # One EVALSHA with the registered SHA, the hot path's only await.
            sha = scripts.handles[operation].sha
            try:
                reply = await scripts.send("EVALSHA", sha, len(keys), *keys, *args)
            except redis_errors.NoScriptError:
                reply = await scripts.reload_and_call(operation, keys, args)
        except BudgetUnavailableError as exc:
            failure = exc
        except redis_errors.ResponseError as exc:
            cannot_serve = isinstance(exc, UNAVAILABLE_REPLY_ERRORS)
            if not cannot_serve and not str(exc).startswith(UNAVAILABLE_REPLIES):
                breaker.success()
                raise StorageError(f"{operation} failed: {exc}") from exc
            breaker.failure()
            self.mark_down(exc)
            failure = unavailable(exc)
        except redis_errors.MaxConnectionsError as exc:
            # No connection came free in time: this process is busy, the
            # store is not down. No breaker, no fail-open: that is for a
            # store that does not answer.
            breaker.abandon()
            busy = True
            failure = unavailable(exc)
        except UNAVAILABLE_ERRORS as exc:
            breaker.failure()
            self.mark_down(exc)
            failure = unavailable(exc)
        except BaseException:
            breaker.abandon()  # cancelled: the outcome is unknown
            raise
        else:
            breaker.success()
            if self._down:
                self._mark_up()
            return reply
        return await self._instead(
            operation, args, failure, busy, fail_open, spool_info
        )

    async def _instead(
        self,
        operation: str,
        args: tuple[Any, ...],
        failure: BudgetUnavailableError,
        busy: bool,
        fail_open: bool,
        spool_info: Callable[[], dict[str, Any]] | None,
    ) -> None:
        """What :meth:`run` does when the store did not take a call: a fact
        is spooled, an admission admits when ``fail_open`` is configured and
        the store (not this process's own pool) failed; else ``failure``."""
        if spool_info is not None:
            keep = self.keep_fact
            if keep is None or not await keep(operation, args, spool_info):
                raise failure
            return None
        if fail_open and self.config.fail_open and not busy:
            if not self._failing_open:  # once per outage, not per request
                self._failing_open = True
                logger.warning(
                    "spendgate: store unavailable, admitting (fail_open=True)"
                )
            return None
        raise failure


class ClusterStore(Store):
    """The store on a Redis Cluster (``redis_cluster=True``): the same
    :meth:`~Store.run`, its calls routed to each key's master by
    :class:`~spendgate.core.cluster.ClusterScripts`.

    A master that does not answer is unavailable for its own slots: the
    breakers are per node (:attr:`node_breakers`), the store-wide one never
    opens, and the outage is logged per node, not for the store.
    :attr:`client` is redis-py's ``RedisCluster`` (``BudgetManager.redis``:
    every command, each key's to its node), made on first use.
    """

    def __init__(self, config: BudgetConfig, constants: Mapping[str, str]) -> None:
        super().__init__(config, constants)
        self.breaker = NeverOpen()
        #: one breaker per master
        self.node_breakers = NodeBreakers(
            config.breaker_failure_threshold, config.breaker_reset_seconds
        )

    def _make_scripts(self) -> ClusterScripts:
        scripts = ClusterScripts(
            self.config,
            self._constants,
            self.node_breakers,
            pipelining=self.config.redis_pipelining,
        )
        assert self.config.redis_url is not None  # (checked by ClusterScripts)
        self.client = client_for(
            self.config.redis_url,
            cluster=True,
            socket_timeout=self.config.redis_timeout_seconds,
            socket_connect_timeout=self.config.redis_connect_timeout_seconds,
        )
        logger.info(
            "spendgate: using the Redis Cluster of {}",
            redact_url(self.config.redis_url),
        )
        return scripts

    @property
    def breakers(self) -> NodeBreakers:
        """The masters' breakers (``.state``: the worst of them)."""
        return self.node_breakers

    def mark_down(self, exc: BaseException) -> None:
        pass  # per node: ClusterScripts logs which master went away

    async def aclose(self) -> None:
        """Close every node's pool and the ``RedisCluster`` client."""
        self.state = ClientState.CLOSED
        if isinstance(self.scripts, ClusterScripts):
            await self.scripts.aclose()
        if self.client is not None:
            await self.client.aclose()


def make_store(
    config: BudgetConfig, constants: Mapping[str, str], client: Redis | None = None
) -> Store:
    """The store for ``config``: on a cluster when ``redis_cluster`` is set
    and no client is given (a given client is used as it is)."""
    if config.redis_cluster and client is None:
        return ClusterStore(config, constants)
    return Store(config, constants, client)
