"""The Redis client of a BudgetManager: the configured server, or the embedded store.

With no ``redis_url`` the manager runs on an in-process fakeredis server with
Lua (via lupa): the zero-setup default for demos and tests. It is announced
once per process in the log, because its state is gone when the process ends.
"""

from __future__ import annotations

from typing import Any

from loguru import logger
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from spendgate.config import BudgetConfig, redact_url
from spendgate.errors import ConfigurationError

_embedded_server: Any = None


def _no_retries() -> Retry:
    # redis-py retries ten times with backoff by default: a dead Redis would
    # hold a request for seconds. The hot path fails fast instead; facts that
    # fail are spooled and replayed.
    return Retry(NoBackoff(), 0)


def connect(config: BudgetConfig) -> tuple[Redis, bool]:
    """A client for ``config`` and whether it is the embedded store.

    Nothing is sent yet: the pool connects on first use.
    """
    if config.redis_url:
        try:
            client = Redis.from_url(
                config.redis_url,
                socket_timeout=config.redis_timeout_seconds,
                socket_connect_timeout=config.redis_connect_timeout_seconds,
                max_connections=config.redis_max_connections,
                retry=_no_retries(),
                decode_responses=False,
            )
        except ValueError as exc:
            raise ConfigurationError(
                f"invalid redis_url {redact_url(config.redis_url)}: {exc}"
            ) from None
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
    client: Redis = fakeredis.FakeAsyncRedis(server=_embedded_server)
    return client
