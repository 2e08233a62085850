"""Everything beside the hot path on a Redis Cluster, and the setting itself.

How: on the session's 3-master test cluster (tests/redis_cluster.py), each
piece is given only the settings (``redis_cluster=True``, ``redis_url`` a
master that does not own spendgate's slot) and must find the keys itself:
the flusher moves the ledger into a fresh Postgres database, reconcile finds
no difference, ``spendgate demo --redis-cluster`` deletes every key it made
(a SCAN of every master), the metrics read the backlog. The setting is
checked too: from the environment, refused without a URL, with a database
other than 0, or on a Redis that is not a cluster node; and a manager
without it is today's single-Redis store.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from redis import Redis as SyncRedis

from conftest import REDIS_URL, FakeClock, real_redis_available, service_missing
from flusher_helpers import assert_exactly_once, make_facts
from pg_server import wait_for
from redis_cluster import LocalCluster
from spendgate import (
    BudgetConfig,
    BudgetManager,
    BudgetUnavailableError,
    ConfigurationError,
    Flusher,
)
from spendgate.cli import main
from spendgate.core.store import ClusterStore, Store
from spendgate.ledger.flusher import DEFAULT_GROUP
from spendgate.ledger.reconcile import reconcile

pytest_plugins = ("pg_fixtures",)
pytestmark = pytest.mark.redis

DAY = date(2026, 3, 15)  # the FakeClock's day


def _config(cluster: LocalCluster, tmp_path: Path, **extra: object) -> BudgetConfig:
    return BudgetConfig(
        redis_url=cluster.url(cluster.not_owning()),
        redis_cluster=True,
        key_prefix=f"ops{uuid.uuid4().hex[:8]}",
        spool_path=tmp_path / "spool",
        **extra,  # type: ignore[arg-type]
    )


def _keys_on_every_master(cluster: LocalCluster, pattern: str) -> list[bytes]:
    found: list[bytes] = []
    for node in cluster.masters():
        with node.client() as client:
            found += list(client.scan_iter(match=pattern, count=1000))
    return found


@pytest.mark.postgres
async def test_the_flusher_and_reconcile_find_the_ledger_from_any_node(
    redis_cluster: LocalCluster, tmp_path: Path, ledger_dsn: str
) -> None:
    config = _config(redis_cluster, tmp_path, postgres_dsn=ledger_dsn)
    total = Decimal(0)
    async with BudgetManager(config, clock=FakeClock()) as budget:
        for i in range(30):
            record = await budget.record_spend(f"u{i % 4}", Decimal(i) / 7, "p1")
            total += record.amount
        flusher = Flusher(config)  # its own RedisCluster client, from the settings
        try:
            assert await flusher.run_once() == 30
            assert (await flusher.backlog()).entries == 0
        finally:
            await flusher.aclose()
        await budget.record_spend("u0", 1)  # one left in the stream
        report = await reconcile(config, DAY)
        assert report.ok, report.differences
        assert report.redis_total == total + 1
        assert report.backlog_entries == 1
        await budget.redis.delete(
            *[k async for k in budget.redis.scan_iter(match=budget.keys.pattern())]
        )


@pytest.mark.postgres
async def test_two_flushers_and_a_dead_ones_claim_move_each_entry_once(
    redis_cluster: LocalCluster, tmp_path: Path, ledger_dsn: str
) -> None:
    config = _config(
        redis_cluster,
        tmp_path,
        postgres_dsn=ledger_dsn,
        flush_batch_size=20,
        flush_interval_seconds=0.01,
    )
    async with BudgetManager(config) as budget:
        records = await make_facts(budget, 200)
        # A flusher that reads a batch and dies holding it, heartbeat and all.
        victim = Flusher(config, consumer="victim", heartbeat_seconds=0.3)
        await victim.connect()
        await victim.heartbeat.beat()
        held = await victim.reader.read(">")
        assert len(held) == 20
        await victim.reader.aclose()
        # Two flushers at once take the rest, and the victim's batch once its
        # heartbeat has expired (well before the claim-idle time).
        a = Flusher(config, consumer="a")
        b = Flusher(config, consumer="b")
        tasks = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
        records += await make_facts(budget, 200, start=200)
        await wait_for(lambda: _all_flushed(budget), timeout=30)
        a.stop()
        b.stop()
        await asyncio.gather(*tasks)
        await victim.aclose()
        await assert_exactly_once(ledger_dsn, records)
        assert a.moved_total + b.moved_total == 400
        await budget.redis.delete(
            *[k async for k in budget.redis.scan_iter(match=budget.keys.pattern())]
        )


async def _all_flushed(budget: BudgetManager) -> bool:
    if await budget.redis.xlen(budget.keys.ledger):
        return False
    summary = await budget.redis.xpending(budget.keys.ledger, DEFAULT_GROUP)
    return int(summary["pending"]) == 0


def test_the_demo_on_a_cluster_deletes_every_key_it_made(
    redis_cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    url = redis_cluster.url(redis_cluster.not_owning())
    code = main(["demo", "--redis-url", url, "--redis-cluster"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "replayed entry" in out
    assert _keys_on_every_master(redis_cluster, "spendgate-demo-*") == []


async def test_the_metrics_and_health_read_through_the_cluster_client(
    redis_cluster: LocalCluster, tmp_path: Path
) -> None:
    async with BudgetManager(_config(redis_cluster, tmp_path)) as budget:
        await budget.record_spend("ada", 1)
        assert await budget.redis.xlen(budget.keys.ledger) == 1
        assert await budget.redis.ping()
        assert budget.breaker.state == "closed"
        await budget.redis.delete(
            *[k async for k in budget.redis.scan_iter(match=budget.keys.pattern())]
        )


def test_the_setting_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPENDGATE_REDIS_CLUSTER", "true")
    monkeypatch.setenv("SPENDGATE_REDIS_URL", "redis://127.0.0.1:7000")
    config = BudgetConfig()
    assert config.redis_cluster is True
    assert isinstance(BudgetManager(config)._store, ClusterStore)
    # Without it, today's single-Redis store, whatever else is set.
    assert type(BudgetManager(BudgetConfig(redis_cluster=False))._store) is Store


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (None, "needs redis_url"),
        ("redis://127.0.0.1:7000/3", "only database 0"),
        ("unix:///tmp/redis.sock", "not a socket"),
        ("redis://127.0.0.1:notaport", "invalid redis_url"),
    ],
)
async def test_a_cluster_setting_that_cannot_work_is_a_configuration_error(
    url: str | None, message: str, tmp_path: Path
) -> None:
    budget = BudgetManager(
        BudgetConfig(redis_url=url, redis_cluster=True, spool_path=tmp_path)
    )
    with pytest.raises(ConfigurationError, match=message):
        await budget.check_availability("ada")
    await budget.aclose()


async def test_a_redis_that_is_not_a_cluster_node_is_named(tmp_path: Path) -> None:
    reason = real_redis_available()
    if reason:
        service_missing("Redis", reason)
    with SyncRedis.from_url(REDIS_URL) as plain:
        assert plain.info("cluster")["cluster_enabled"] == 0
    budget = BudgetManager(
        BudgetConfig(redis_url=REDIS_URL.rsplit("/", 1)[0], redis_cluster=True)
    )
    with pytest.raises(ConfigurationError, match="not a cluster node"):
        await budget.check_availability("ada")
    await budget.aclose()


async def test_a_cluster_that_does_not_answer_at_start_fails_closed(
    tmp_path: Path,
) -> None:
    from redis_server import free_port

    config = BudgetConfig(
        redis_url=f"redis://127.0.0.1:{free_port()}",
        redis_cluster=True,
        spool_path=tmp_path / "spool",
    )
    async with BudgetManager(config) as budget:  # opening is not an error
        with pytest.raises(BudgetUnavailableError):
            await budget.check_availability("ada", estimated_cost=1)
        record = await budget.record_spend("ada", 1)
        assert record.spooled
        assert budget.spool is not None and budget.spool.depth == 1
