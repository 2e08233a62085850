"""Shared fixtures: the backend table, budgets bound to it, an injectable clock.

Every behavioural test that takes ``budget`` / ``make_budget`` runs twice:
against the real Redis on the machine (``redis``) and against the embedded
fakeredis with Lua (``fakeredis``). Each test gets its own key prefix and
deletes its keys afterwards, on Redis db 9 by default
(``SPENDGATE_TEST_REDIS_URL`` overrides it).

Under ``CI=true`` a test that needs Redis or Postgres *fails* when the
service is missing; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import fakeredis
import pytest
import redis.asyncio as aioredis
from loguru import logger
from redis import Redis as SyncRedis

from redis_cluster import LocalCluster, redis_cli_binary
from redis_server import RedisServer, redis_server_binary
from spendgate import BudgetConfig, BudgetManager

# spendgate's log lines are off until the application enables them; the
# tests read them (a warning said once, no secret in any line), so they are on.
logger.enable("spendgate")

REDIS_URL = os.environ.get("SPENDGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")

#: the test modules that run LiteLLM: it builds some pydantic models lazily
#: (mid-test), and their warnings are LiteLLM's to fix, not failures of ours
LITELLM_WARNINGS = pytest.mark.filterwarnings(
    "ignore:Items? .* using the `ReadOnly` qualifier:UserWarning"
)
POSTGRES_DSN = os.environ.get(
    "SPENDGATE_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# A test module that imports LiteLLM directly must get its bundled cost map,
# not a fetch from the network (spendgate itself sets this before importing).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def service_missing(what: str, reason: str) -> None:
    """Fail under CI (a green run must mean the real thing ran), else skip."""
    message = f"{what} is not reachable: {reason}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: tests needing it must run)", pytrace=False)
    pytest.skip(message)


def real_redis_available() -> str | None:
    """``None`` when the real Redis answers, else the reason it does not."""
    try:
        client = SyncRedis.from_url(
            REDIS_URL, socket_connect_timeout=1, socket_timeout=1
        )
        client.ping()
        client.close()
        return None
    except Exception as exc:  # any failure means "not usable"
        return f"{type(exc).__name__}: {exc}"


@pytest.fixture(autouse=True)
def _no_spendgate_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's SPENDGATE_* variables must not leak into the tests.
    for name in list(os.environ):
        if name.startswith(("SPENDGATE_", "COREASON_BUDGET_")) and not name.startswith(
            "SPENDGATE_TEST_"
        ):
            monkeypatch.delenv(name)
    # (the ledger commands fall back to it)
    monkeypatch.delenv("DATABASE_URL", raising=False)


class FakeClock:
    """A settable clock: ``clock()`` returns the current aware UTC datetime."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 3, 15, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float = 0, **kwargs: float) -> None:
        self.now += timedelta(seconds=seconds, **kwargs)

    def set(self, moment: datetime) -> None:
        self.now = moment


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


BACKENDS = [
    pytest.param("redis", marks=pytest.mark.redis, id="redis"),
    pytest.param("fakeredis", id="fakeredis"),
]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def redis_client(
    backend: str, request: pytest.FixtureRequest
) -> AsyncIterator[aioredis.Redis]:
    """A client of the parametrized backend; keys are cleaned by ``key_prefix``.

    The ``cluster`` backend (tests/test_cluster_core.py) is redis-py's
    ``RedisCluster`` on the session's test cluster, through a master that
    does not own spendgate's slot; ``sharded-cluster`` is the same client
    (tests/test_shards_contract.py), ``sharded`` the real Redis's."""
    if backend in ("cluster", "sharded-cluster"):
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        client = cast(
            aioredis.Redis,
            aioredis.RedisCluster.from_url(
                cluster.url(cluster.not_owning()), socket_timeout=5
            ),
        )
    elif backend in ("redis", "sharded"):
        reason = real_redis_available()
        if reason:
            service_missing("Redis", reason)
        # (a pool as large as the library's own default: tests fire 200 calls at once)
        client = aioredis.Redis.from_url(
            REDIS_URL, socket_timeout=5, max_connections=512
        )
    else:
        client = fakeredis.FakeAsyncRedis(
            server=fakeredis.FakeServer(), max_connections=512
        )
    yield client
    await client.aclose()


@pytest.fixture
async def key_prefix(redis_client: aioredis.Redis) -> AsyncIterator[str]:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    yield prefix
    # (scan_iter: on a cluster, every master's keys)
    keys = [k async for k in redis_client.scan_iter(match=f"{prefix}:*", count=1000)]
    for start in range(0, len(keys), 1000):
        await redis_client.delete(*keys[start : start + 1000])


MakeBudget = Callable[..., BudgetManager]


@pytest.fixture
async def make_budget(
    redis_client: aioredis.Redis,
    key_prefix: str,
    clock: FakeClock,
    backend: str,
    request: pytest.FixtureRequest,
) -> AsyncIterator[MakeBudget]:
    """``make_budget(**settings)``: a BudgetManager on the test's backend, prefix
    and clock. Limits default to none at all, so each test states its own.

    On the ``cluster`` backend the manager connects itself
    (``redis_cluster=True``) through a master that does not own its keys.
    The sharded backends (tests/test_shards_contract.py) spread its keys
    over buckets of users: ``sharded`` 8 on the real Redis,
    ``sharded-cluster`` 16 on the cluster (a test's own ``cluster_buckets``
    wins)."""
    made: list[BudgetManager] = []
    cluster_settings: dict[str, Any] = {}
    shard_settings: dict[str, Any] = {}
    if backend in ("cluster", "sharded-cluster"):
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        cluster_settings = {
            "redis_url": cluster.url(cluster.not_owning()),
            "redis_cluster": True,
            "spool_path": request.getfixturevalue("tmp_path") / "spool",
            # (a cluster client opens each node's connection when first sent
            # to, mid-test; a busy CI machine has taken longer than the hot
            # path's 0.25 s default to accept one: tests of timeouts set theirs)
            "redis_connect_timeout_seconds": 5,
        }
    if backend in ("sharded", "sharded-cluster"):
        shard_settings = {"cluster_buckets": 8 if backend == "sharded" else 16}

    def make(*, use_clock: bool = True, **settings: Any) -> BudgetManager:
        base: dict[str, Any] = {
            "key_prefix": key_prefix,
            "daily_user_limit": None,
            "daily_project_limit": None,
            "daily_global_limit": None,
            **cluster_settings,
            **shard_settings,
        }
        base.update(settings)
        budget = BudgetManager(
            BudgetConfig(**base),
            clock=clock if use_clock else None,
            redis=None if cluster_settings else redis_client,
        )
        made.append(budget)
        return budget

    yield make
    for budget in made:
        await budget.aclose()


async def stream_entries(
    budget: BudgetManager, stream: str = "ledger"
) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The entries of the ``ledger`` or ``events`` stream, as XRANGE gives
    them: every bucket's, in id order (a sharded deployment keeps one stream
    of each per bucket; with one bucket, the one stream)."""
    entries: list[tuple[bytes, dict[bytes, bytes]]] = []
    for keys in budget.keys.buckets():
        entries += await budget.redis.xrange(getattr(keys, stream))
    # (a stable sort: one stream's entries stay as they were)
    return sorted(entries, key=lambda e: tuple(map(int, e[0].split(b"-"))))


async def deployment_keys(budget: BudgetManager) -> list[bytes]:
    """Every key of the budget's deployment, sorted: the root's and, on a
    sharded one, every bucket's."""
    found: set[bytes] = set()
    for keys in {budget.keys, *budget.keys.buckets()}:
        found.update(
            [k async for k in budget.redis.scan_iter(match=keys.pattern(), count=1000)]
        )
    return sorted(found)


async def deployment_state(budget: BudgetManager) -> dict[bytes, Any]:
    """Every key of the deployment with its value, to show that a call
    changed nothing (:func:`keys_state`)."""
    return await keys_state(budget.redis, await deployment_keys(budget))


async def keys_state(client: Any, keys: Iterable[bytes]) -> dict[bytes, Any]:
    """Each key with its value (a stream's entries, a set's members) and
    whether it expires."""
    state: dict[bytes, Any] = {}
    for key in keys:
        kind = await client.type(key)
        if kind == b"string":
            value: Any = await client.get(key)
        elif kind == b"hash":
            value = await client.hgetall(key)
        elif kind == b"zset":
            value = await client.zrange(key, 0, -1, withscores=True)
        elif kind == b"stream":
            value = await client.xrange(key)
        elif kind == b"set":
            value = await client.smembers(key)
        else:
            value = kind
        state[key] = (value, await client.pttl(key) > 0)
    return state


@pytest.fixture
async def layout(make_budget: MakeBudget, tmp_path: Path) -> AsyncIterator[Any]:
    """``layout(buckets)``: a manager on that bucket count, with a spool of the
    test's own (a rebucketing refuses while a spool holds facts:
    tests/test_rebucket*.py)."""

    def make(buckets: int, **settings: Any) -> BudgetManager:
        return make_budget(
            cluster_buckets=buckets, spool_path=tmp_path / "spool", **settings
        )

    yield make


@pytest.fixture
async def budget(make_budget: MakeBudget) -> BudgetManager:
    """A budget with no caps at all; tests set what they need."""
    return make_budget()


def _start_cluster(directory: Path, replicas: int = 0) -> LocalCluster:
    if redis_server_binary() is None or redis_cli_binary() is None:
        service_missing("Redis Cluster", "redis-server or redis-cli is not installed")
    # free ports are found by binding and letting go, so another process can
    # take one before a node binds it: a cluster that fails to start is
    # started again on new ports (and fails the test after three tries)
    for attempt in range(3):
        cluster = LocalCluster(directory / f"try{attempt}", replicas=replicas)
        try:
            cluster.start()
        except Exception as exc:
            cluster.stop()
            failure = exc
        else:
            return cluster
    pytest.fail(f"the test cluster did not start: {failure}", pytrace=False)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A 3-master Redis Cluster of the session's own (started once, torn down
    at the end): for tests that do not change its topology."""
    cluster = _start_cluster(tmp_path_factory.mktemp("cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture
def private_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A 3-master Redis Cluster of the test's own: for tests that kill a
    master or move slots."""
    cluster = _start_cluster(tmp_path / "cluster")
    yield cluster
    cluster.stop()


@pytest.fixture
def replicated_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """3 masters with a replica each, of the test's own: for failovers."""
    cluster = _start_cluster(tmp_path / "cluster", replicas=1)
    yield cluster
    cluster.stop()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own on a free port (AOF on, fsync always),
    started, and killed after: for the tests that kill, pause or flush it."""
    if redis_server_binary() is None:
        pytest.fail("redis-server is not installed (these tests start their own)")
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.kill()
