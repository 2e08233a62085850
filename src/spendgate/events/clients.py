"""The event dispatcher's Redis client: a connection of its own.

A dispatcher blocks on ``XREADGROUP``: that must never hold a connection of
the hot path's pool, so the manager's dispatcher gets a pool of its own to
the same server (:func:`sibling_client`), and a dispatcher of its own
connects from the settings (:func:`dispatcher_client`).
"""

from __future__ import annotations

from redis.asyncio import ConnectionPool, Redis

from spendgate.config import BudgetConfig
from spendgate.core.connection import client_for, embedded_client

#: the longest a blocking read waits before the loop looks around (stop,
#: claims, a newly wanted stream), seconds
BLOCK_SECONDS = 1.0


def dispatcher_client(
    config: BudgetConfig, block_seconds: float = BLOCK_SECONDS
) -> Redis:
    """A client of the dispatcher's own (the embedded store's, without a URL)."""
    if not config.redis_url:
        return embedded_client()
    # The timeout covers a blocking read; not the hot path's.
    return client_for(
        config.redis_url,
        cluster=config.redis_cluster,
        socket_timeout=block_seconds + 10,
        socket_connect_timeout=5,
    )


def sibling_client(client: Redis, block_seconds: float = BLOCK_SECONDS) -> Redis:
    """A client of the same server as ``client`` with a pool of its own (a
    blocking read must not take a connection of the hot path's pool).

    :raise TypeError: ``client`` has no connection pool to copy (then use
        it as it is)
    """
    pool = getattr(client, "connection_pool", None)
    if pool is None or not hasattr(pool, "connection_kwargs"):
        raise TypeError(f"cannot copy the connection settings of {client!r}")
    kwargs = dict(pool.connection_kwargs)
    kwargs["socket_timeout"] = block_seconds + 10
    kwargs.setdefault("socket_connect_timeout", 5)
    # from_pool: closing the client closes the pool (and its sockets).
    return Redis.from_pool(
        ConnectionPool(
            connection_class=pool.connection_class, max_connections=16, **kwargs
        )
    )
