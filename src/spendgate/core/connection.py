"""The Redis client of a BudgetManager: the configured server, or the embedded store.

With no ``redis_url`` the manager runs on an in-process fakeredis server with
Lua (via lupa): the zero-setup default for demos and tests. It is announced
once per process in the log, because its state is gone when the process ends.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, cast

from loguru import logger
from redis.asyncio import ConnectionPool, Redis, RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import DataError, MaxConnectionsError

from spendgate.config import BudgetConfig, redact_url
from spendgate.config.redact import redact_secrets
from spendgate.errors import ConfigurationError

_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # redis[hiredis] is a dependency; stay correct without it
    _hiredis_pack = None

_embedded_server: Any = None


def _no_retries() -> Retry:
    # redis-py retries ten times with backoff by default: a dead Redis would
    # hold a request for seconds. The hot path fails fast instead; facts that
    # fail are spooled and replayed.
    return Retry(NoBackoff(), 0)


# One subclass per redis-py connection class (TCP, TLS, Unix socket), made once.
_hiredis_packing_classes: dict[type[Any], type[Any]] = {}


def _pack_with_hiredis(self: Any, *args: Any) -> list[bytes]:
    # The wire format redis-py's own pure-Python packer produces, built in C:
    # the hot path sends 15-20 arguments per EVALSHA, and packing them in
    # Python costs more than the script itself. Same rules as redis-py's
    # packers: a command name with spaces ("SCRIPT LOAD") is split, buffers
    # are copied to bytes, and a value that cannot be sent is a DataError.
    first = args[0]
    if isinstance(first, str):
        args = tuple(first.encode().split()) + args[1:]
    elif b" " in first:
        args = tuple(first.split()) + args[1:]
    assert _hiredis_pack is not None  # only installed when hiredis is there
    try:
        return [_hiredis_pack(args)]
    except TypeError:
        pass  # buffers hiredis does not take, or a value nobody can send
    args = tuple(bytes(a) if isinstance(a, bytearray | memoryview) else a for a in args)
    try:
        return [_hiredis_pack(args)]
    except TypeError as exc:
        raise DataError(str(exc)) from exc


def _use_hiredis_packing(client: Redis) -> None:
    """Make ``client``'s pool create connections that pack commands with hiredis.

    redis-py's asyncio connections always pack in Python (its sync client
    already uses hiredis when installed). Nothing changes when hiredis is
    missing, or when the pool has connections already.
    """
    if _hiredis_pack is None:
        return
    pool = client.connection_pool
    base = pool.connection_class
    cls = _hiredis_packing_classes.get(base)
    if cls is None:
        cls = type(
            f"HiredisPacking{base.__name__}",
            (base,),
            {"pack_command": _pack_with_hiredis, "__module__": __name__},
        )
        _hiredis_packing_classes[base] = cls
    pool.connection_class = cls


class WaitingPool(ConnectionPool):
    """A pool that, when every connection is taken, waits for one to come back.

    A burst of concurrent calls is this process being busy, not Redis being
    down: a call that finds every connection in use waits (first come, first
    served, at most ``timeout`` seconds) for one to be released, and a wait
    that runs out raises :class:`MaxConnectionsError`, which the store tells
    apart from an outage (no breaker, no fail-open). A call that finds a
    connection free takes redis-py's own path, with nothing added: the hot
    path pays for the wait only when there is one.

    :param timeout: the longest wait for a free connection, seconds
    """

    def __init__(self, *args: Any, timeout: float = 2.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout = timeout
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except MaxConnectionsError:
            pass
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise MaxConnectionsError(
                    f"all {self.max_connections} connections stayed busy for "
                    f"{self.timeout}s"
                )
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                continue  # (the loop raises, the deadline having passed)
            except BaseException:
                # Cancelled: a release meant for this call goes to the next.
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
            try:
                return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
            except MaxConnectionsError:
                continue  # taken meanwhile by a call that did not wait

    async def release(self, connection: Any) -> None:
        await super().release(connection)
        if self._waiters:
            self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


def client_name(key_prefix: str) -> str:
    """What a manager's connections are named (``CLIENT SETNAME``, once per
    connection), so that ``CLIENT LIST`` shows a deployment's running
    managers (``spendgate rebucket`` refuses to move keys under them)."""
    return f"spendgate:{key_prefix}"


def _pool_options(config: BudgetConfig) -> dict[str, Any]:
    # The hot path's pool: what connect() and every cluster node's pool use.
    return {
        "client_name": client_name(config.key_prefix),
        "socket_timeout": config.redis_timeout_seconds,
        "socket_connect_timeout": config.redis_connect_timeout_seconds,
        "max_connections": config.redis_max_connections,
        "timeout": config.redis_pool_timeout_seconds,
        "retry": _no_retries(),
        "decode_responses": False,
    }


def connect(config: BudgetConfig) -> tuple[Redis, bool]:
    """A client for ``config`` and whether it is the embedded store.

    Nothing is sent yet: the pool connects on first use.
    """
    if config.redis_url:
        try:
            pool = WaitingPool.from_url(config.redis_url, **_pool_options(config))
            client = Redis.from_pool(pool)
        except ValueError as exc:
            reason = redact_secrets(str(exc), config.redis_url)
            raise ConfigurationError(
                f"invalid redis_url {redact_url(config.redis_url)}: {reason}"
            ) from None
        _use_hiredis_packing(client)
        return client, False
    return embedded_client(), True


def cluster_node_options(config: BudgetConfig) -> dict[str, Any]:
    """What every cluster node's connections share, read from ``redis_url``
    (any node of the cluster: its host and port are only where the slot map
    is first asked for).

    :raise ConfigurationError: no URL, an invalid one, a Unix socket or a
        database other than 0 (a cluster has only database 0)
    """
    url = config.redis_url
    if not url:
        raise ConfigurationError("redis_cluster=True needs redis_url (any node)")
    try:
        options: dict[str, Any] = dict(parse_url(url))
    except ValueError as exc:
        reason = redact_secrets(str(exc), url)
        raise ConfigurationError(
            f"invalid redis_url {redact_url(url)}: {reason}"
        ) from None
    if options.get("path"):
        raise ConfigurationError("a Redis Cluster is reached over TCP, not a socket")
    if options.pop("db", 0):
        raise ConfigurationError("a Redis Cluster has only database 0")
    return options


def node_client(
    config: BudgetConfig, options: dict[str, Any], host: str, port: int
) -> Redis:
    """The hot path's client of one cluster node: the pool, waiting and
    hiredis packing of a single Redis (see :func:`connect`)."""
    # (options in the URL win, as they do in WaitingPool.from_url)
    settings = {**_pool_options(config), **options, "host": host, "port": port}
    pool = WaitingPool(**settings)
    client = Redis.from_pool(pool)
    _use_hiredis_packing(client)
    return client


def client_for(
    url: str, *, cluster: bool, socket_timeout: float, socket_connect_timeout: float
) -> Redis:
    """A client for the work beside the hot path (the flusher, reconcile,
    scans): redis-py's own, ``RedisCluster`` on a cluster.

    ``RedisCluster`` has the commands spendgate sends there (each key's
    command goes to its node, SCAN to every master): it is typed as
    ``Redis`` for the callers, which use nothing else.
    """
    if cluster:
        return cast(
            Redis,
            RedisCluster.from_url(
                url,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_connect_timeout,
            ),
        )
    return Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_connect_timeout,
    )


def embedded_client() -> Redis:
    """A client of the process-wide embedded store (fakeredis with Lua)."""
    global _embedded_server
    try:
        import fakeredis
    except ImportError:
        raise ConfigurationError(
            "no redis_url is configured and the embedded store is not installed: "
            "set SPENDGATE_REDIS_URL, or pip install 'spendgate[embedded]'"
        ) from None
    if _embedded_server is None:
        _embedded_server = fakeredis.FakeServer()
        logger.warning(
            "spendgate: no redis_url configured, running on the embedded in-process "
            "store (fakeredis); budgets are lost when this process exits. "
            "Set SPENDGATE_REDIS_URL for production."
        )
    # Its "connections" are in-process objects: a burst of concurrent calls
    # must not meet redis-py's default cap of 100 (an "unavailable" store).
    client: Redis = fakeredis.FakeAsyncRedis(
        server=_embedded_server, max_connections=100_000
    )
    return client
