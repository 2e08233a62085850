"""The Redis client of a BudgetManager: the configured server, or the embedded store.

With no ``redis_url`` the manager runs on an in-process fakeredis server with
Lua (via lupa): the zero-setup default for demos and tests. It is announced
once per process in the log, because its state is gone when the process ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loguru import logger
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
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


class WaitingPool(BlockingConnectionPool):
    """A pool that, when every connection is taken, waits for one to come back.

    A burst of concurrent calls is this process being busy, not Redis being
    down: a call waits (at most ``timeout`` seconds) instead of failing at
    once, and a wait that runs out raises :class:`MaxConnectionsError`, which
    the store tells apart from an outage (no breaker, no fail-open).
    """

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        except RedisConnectionError as exc:
            # The wait for a free connection ran out (not a failed connect,
            # which raises redis' own TimeoutError or a ConnectionError
            # caused by an OSError).
            if isinstance(exc.__cause__, TimeoutError):
                raise MaxConnectionsError(
                    f"all {self.max_connections} connections stayed busy for "
                    f"{self.timeout}s"
                ) from exc
            raise


def connect(config: BudgetConfig) -> tuple[Redis, bool]:
    """A client for ``config`` and whether it is the embedded store.

    Nothing is sent yet: the pool connects on first use.
    """
    if config.redis_url:
        try:
            pool = WaitingPool.from_url(
                config.redis_url,
                socket_timeout=config.redis_timeout_seconds,
                socket_connect_timeout=config.redis_connect_timeout_seconds,
                max_connections=config.redis_max_connections,
                timeout=config.redis_pool_timeout_seconds,
                retry=_no_retries(),
                decode_responses=False,
            )
            client = Redis.from_pool(pool)
        except ValueError as exc:
            reason = redact_secrets(str(exc), config.redis_url)
            raise ConfigurationError(
                f"invalid redis_url {redact_url(config.redis_url)}: {reason}"
            ) from None
        _use_hiredis_packing(client)
        return client, False
    return embedded_client(), True


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
