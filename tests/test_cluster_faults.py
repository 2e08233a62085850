"""A Redis Cluster that changes under traffic: a slot moved, a master killed,
a master answering CLUSTERDOWN.

How: each test starts its OWN 3-master cluster (tests/redis_cluster.py;
``appendfsync always``, so an acknowledged write survives ``SIGKILL``) and a
manager with ``redis_cluster=True`` through a master that does not own
spendgate's slot. Facts are recorded concurrently while the ``{sg}`` slot
moves to another master (twice) or its master is killed; afterwards Redis
must hold exactly the facts the callers were told about: the day's counters
equal their sum, each balance equals credits minus charges, and the ledger
stream has exactly one entry per fact. The helpers that say so are
test_chaos.py's (the same checks on a single Redis).
"""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from conftest import FakeClock
from redis_cluster import SG_SLOT, LocalCluster
from spendgate import (
    BudgetConfig,
    BudgetExceededError,
    BudgetManager,
    BudgetUnavailableError,
    DeductResult,
    SpendRecord,
)
from spendgate.core.cluster import ClusterScripts
from test_chaos import MICRO, Told, _assert_exactly, _drained, _fact

pytestmark = [pytest.mark.slow, pytest.mark.redis]


def _config(cluster: LocalCluster, spool: Path, **extra: Any) -> BudgetConfig:
    settings: dict[str, Any] = {
        "redis_url": cluster.url(cluster.not_owning()),
        "redis_cluster": True,
        "key_prefix": "cluster",
        "daily_user_limit": None,
        "daily_project_limit": None,
        "daily_global_limit": None,
        "enforce_balance": True,
        "min_balance": "-1000000000",
        "spool_path": spool,
        "breaker_failure_threshold": 3,
        "breaker_reset_seconds": 0.1,
        "spool_replay_interval_seconds": 0.05,
    }
    settings.update(extra)
    return BudgetConfig(**settings)


def _router(budget: BudgetManager) -> ClusterScripts:
    scripts = budget._store.ensure_open()
    assert isinstance(scripts, ClusterScripts)
    return scripts


async def _keyed_fact(
    budget: BudgetManager, rng: random.Random, user: str, n: int
) -> SpendRecord | DeductResult:
    """One fact of a random kind, every call keyed in spendgate's slot (a
    reserve without an idempotency key is keyed by its hold record)."""
    amount = Decimal(rng.randint(1, 3_000_000)) * MICRO
    kind = n % 4
    if kind == 0:
        return await budget.record_spend(user, amount, project_id=f"p{n % 3}")
    if kind == 1:
        return await budget.record_spend(user, amount, idempotency_key=f"{user}-{n}")
    if kind == 2:
        if n % 8 == 6:  # no idempotency key either
            return await budget.deduct(user, amount)
        return await budget.add_credits(user, amount)
    await budget.check_availability(user, estimated_cost=amount)
    if n % 8 == 7:  # no idempotency key either
        lease = await budget.reserve_up_to(user, amount, min_amount=amount)
    else:
        key = f"lease-{n}" if n % 8 == 3 else None
        lease = await budget.reserve(user, amount, idempotency_key=key)
    return await budget.settle(lease, amount)


async def test_the_slot_moved_twice_under_traffic_loses_and_doubles_nothing(
    private_cluster: LocalCluster, tmp_path: Path
) -> None:
    cluster = private_cluster
    users = [f"user-{i}" for i in range(8)]
    workers, per_worker = 40, 60  # 2,400 facts
    told = Told()
    rng = random.Random(11)
    first = cluster.owner()
    targets = [m for m in cluster.masters() if m is not first]
    # Slot 0 (an empty key's) parts from spendgate's for the whole run: no
    # call may be keyed by it.
    await asyncio.to_thread(cluster.migrate_slot, 0, targets[0])
    # (MIGRATE blocks the source master while it copies the slot's keys: on
    # a busy machine longer than the hot path's 0.25 s read timeout)
    config = _config(cluster, tmp_path / "spool", redis_timeout_seconds=5)
    async with BudgetManager(config, clock=FakeClock()) as budget:
        keyed = await budget.record_spend(users[0], "0.5", idempotency_key="k")
        told.add(keyed, users[0])

        async def worker(w: int) -> None:
            for n in range(per_worker):
                user = users[(w + n) % len(users)]
                told.add(await _keyed_fact(budget, rng, user, w * per_worker + n), user)

        async def reshard() -> None:
            for at, target in zip((600, 1500), targets, strict=True):
                while told.facts < at:
                    await asyncio.sleep(0.005)
                moved = await asyncio.to_thread(cluster.migrate_slot, SG_SLOT, target)
                assert moved > 0

        await asyncio.gather(reshard(), *(worker(w) for w in range(workers)))
        assert told.facts == 1 + workers * per_worker
        assert told.spooled == 0, "a slot moving is no outage"
        await _assert_exactly(budget, told, users)
        # Followed: the router sends straight to the new owner.
        assert _router(budget).redirections["MOVED"] > 0
        owner = _router(budget).topology.owners[SG_SLOT]
        assert owner is not None
        assert owner.port == targets[-1].port == cluster.owner().port
        # The idempotency records moved with the slot: a replay charges nothing.
        again = await budget.record_spend(users[0], "0.5", idempotency_key="k")
        assert again.replayed
        await _assert_exactly(budget, told, users)


async def test_a_call_while_the_slot_is_half_moved_follows_ask(
    private_cluster: LocalCluster, tmp_path: Path
) -> None:
    cluster = private_cluster
    async with BudgetManager(
        _config(cluster, tmp_path / "spool", daily_user_limit=5), clock=FakeClock()
    ) as budget:
        await budget.record_spend("ada", 1)
        target = cluster.not_owning()
        # Every key is at the target; the source answers ASK for the slot.
        assert await asyncio.to_thread(
            cluster.open_migration, SG_SLOT, target, finish=False
        )
        # (set_limits touches its one key: a script Redis runs under ASKING)
        await budget.set_limits("user", "ada", daily=2)
        assert _router(budget).redirections == {"ASK": 1}
        owner = _router(budget).topology.owners[SG_SLOT]
        assert owner is not None and owner.port != target.port  # asked, not moved
        await asyncio.to_thread(cluster.finish_migration, SG_SLOT, target)
        with pytest.raises(BudgetExceededError) as refused:
            await budget.check_availability("ada", estimated_cost="1.5")
        assert refused.value.limit == 2
        await budget.check_availability("ada", estimated_cost="1")


async def test_clusterdown_is_retried_then_unavailable_and_facts_replay(
    private_cluster: LocalCluster, tmp_path: Path
) -> None:
    cluster = private_cluster
    owner = cluster.owner()
    async with BudgetManager(
        _config(cluster, tmp_path / "spool"), clock=FakeClock()
    ) as budget:
        await budget.record_spend("ada", 1)
        # The owner stops serving: a slot of its own left uncovered, with
        # full coverage required, and it answers CLUSTERDOWN for every slot.
        with owner.client() as client:
            client.config_set("cluster-require-full-coverage", "yes")
            client.execute_command("CLUSTER", "DELSLOTS", 5000)
        with pytest.raises(BudgetUnavailableError, match="cluster is down"):
            await budget.check_availability("ada", estimated_cost=1)
        assert _router(budget).redirections["CLUSTERDOWN"] > 1  # retried first
        spooled = await budget.record_spend("ada", 2)
        assert spooled.spooled
        with owner.client() as client:
            client.execute_command("CLUSTER", "ADDSLOTS", 5000)
        await _drained(budget)
        usage = await budget.get_usage("ada")
        assert usage["user"].daily.spent == 3
        assert await budget.redis.xlen(budget.keys.ledger) == 2


async def test_a_dead_master_fails_admission_closed_and_its_facts_replay(
    private_cluster: LocalCluster, tmp_path: Path
) -> None:
    cluster = private_cluster
    users = [f"user-{i}" for i in range(6)]
    told = Told()
    rng = random.Random(5)
    owner = cluster.owner()
    async with BudgetManager(
        _config(cluster, tmp_path / "spool"), clock=FakeClock()
    ) as budget:
        for n in range(40):
            told.add(await _fact(budget, rng, users[n % 6], n), users[n % 6])
        owner.kill()
        for _ in range(5):
            with pytest.raises(BudgetUnavailableError):
                await budget.check_availability(users[0], estimated_cost=1)
            with pytest.raises(BudgetUnavailableError):
                await budget.reserve(users[0], 1, idempotency_key="while-down")
        # Only the dead master's breaker opened; the others still serve.
        router = _router(budget)
        states = {name: b.state for name, b in budget.breaker.nodes.items()}
        assert states[f"127.0.0.1:{owner.port}"] == "open"
        assert budget.breaker.state == "open"
        other = cluster.not_owning()
        key = next(k for k in map(str, range(10_000)) if _served_by(cluster, k, other))
        assert await router.send("EVAL", "return redis.call('PING')", 1, key) == b"PONG"
        assert states[f"127.0.0.1:{other.port}"] == "closed"
        # Facts for its keys are spooled (concurrently: one outage, many calls).
        records = await asyncio.gather(
            *(_fact(budget, rng, users[n % 6], n) for n in range(40, 240))
        )
        for n, record in enumerate(records, start=40):
            told.add(record, users[n % 6])
        assert told.spooled > 0
        await asyncio.to_thread(owner.start)
        await asyncio.to_thread(cluster.wait_ok)
        await _drained(budget)
        await _assert_exactly(budget, told, users)
        await budget.check_availability(users[0], estimated_cost=1)
        assert budget.breaker.state == "closed"


async def test_a_replica_takes_over_a_dead_master_and_the_spool_replays_into_it(
    replicated_cluster: LocalCluster, tmp_path: Path
) -> None:
    cluster = replicated_cluster
    users = [f"user-{i}" for i in range(6)]
    told = Told()
    rng = random.Random(3)
    owner = cluster.owner()
    async with BudgetManager(
        _config(cluster, tmp_path / "spool"), clock=FakeClock()
    ) as budget:
        for n in range(60):
            told.add(await _fact(budget, rng, users[n % 6], n), users[n % 6])
        await asyncio.to_thread(cluster.wait_replicated, owner)
        owner.kill()
        with pytest.raises(BudgetUnavailableError):
            await budget.check_availability(users[0], estimated_cost=1)

        # Facts keep coming during the failover: spooled, then replayed into
        # the promoted replica, which the router finds by itself.
        async def traffic() -> None:
            for n in range(60, 360):
                told.add(await _fact(budget, rng, users[n % 6], n), users[n % 6])
                await asyncio.sleep(0.005)

        await asyncio.gather(
            traffic(), asyncio.to_thread(cluster.wait_owner_changes, SG_SLOT, owner)
        )
        assert told.spooled > 0
        await _drained(budget)
        await _assert_exactly(budget, told, users)
        new_owner = _router(budget).topology.owners[SG_SLOT]
        assert new_owner is not None and new_owner.port == cluster.owner().port
        await budget.check_availability(users[0], estimated_cost=1)


def _served_by(cluster: LocalCluster, key: str, node: Any) -> bool:
    from redis.crc import key_slot

    slot = key_slot(key.encode())
    return cluster.owner(slot) is node
