"""A sharded deployment (``cluster_buckets > 1``) on a Redis Cluster that
changes under traffic: a bucket's slot moved, a master killed.

How: each test starts its OWN cluster (tests/redis_cluster.py; ``appendfsync
always``, so an acknowledged write survives ``SIGKILL``) and a manager with
``redis_cluster=True`` and :data:`BUCKETS` buckets, whose users' buckets
land on all three masters. Facts of every kind are recorded for users of
many buckets while one bucket's slot moves to another master (twice), or
while the master owning some buckets is killed and its replica takes over.
Afterwards Redis must hold exactly the facts the callers were told about,
bucket by bucket: each user's day counter equals the sum told, each balance
equals credits minus charges, nothing is held, each bucket's ledger stream
has exactly one entry per fact of its users, the root's has none, and the
platform's spend (every bucket's summed) equals all the charges. The checks
of test_chaos.py read the root's ledger stream, which a sharded deployment
never writes, so :func:`assert_exactly_in_buckets` is their sharded form.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

from conftest import FakeClock
from redis_cluster import LocalCluster
from redis_server import RedisServer
from spendgate import (
    BudgetConfig,
    BudgetManager,
    BudgetUnavailableError,
    DeductResult,
    SpendRecord,
)
from spendgate.core.cluster import ClusterScripts
from spendgate.core.shards import keys_for
from test_chaos import MICRO, Told, _drained, _fact
from test_cluster_faults import _keyed_fact

pytestmark = [pytest.mark.slow, pytest.mark.redis]

#: buckets of the tests' deployments: 16 hash tags, on every master of the
#: standard three-way slot split (4, 6 and 6 of them)
BUCKETS = 16
#: users of the tests, in every one of the buckets (one or two in each)
USERS = [f"user-{i}" for i in range(24)]
#: the tests' deployments' keys
KEYS = keys_for("shards", BUCKETS)
#: the user whose bucket is moved, or whose master is killed (a bucket of
#: two of USERS)
SUBJECT = "user-3"


def _config(cluster: LocalCluster, spool: Path, **extra: Any) -> BudgetConfig:
    settings: dict[str, Any] = {
        # (through a master that SUBJECT's bucket, moved or killed, is not on)
        "redis_url": cluster.url(cluster.not_owning(_slot(SUBJECT))),
        "redis_cluster": True,
        "cluster_buckets": BUCKETS,
        "key_prefix": "shards",
        "daily_user_limit": None,
        "daily_project_limit": None,
        "daily_global_limit": None,
        # Balances always tracked (credits and charges commute, whatever
        # order a replay brings them in), with a credit line deep enough
        # that admission never refuses for the balance.
        "enforce_balance": True,
        "min_balance": "-1000000000",
        "spool_path": spool,
        "breaker_failure_threshold": 3,
        "breaker_reset_seconds": 0.1,
        "spool_replay_interval_seconds": 0.05,
    }
    settings.update(extra)
    return BudgetConfig(**settings)


class BucketTold(Told):
    """What callers were told, with how many facts each user had (a
    bucket's ledger holds its users' facts)."""

    def __init__(self) -> None:
        super().__init__()
        self.facts_of: Counter[str] = Counter()

    def add(self, record: SpendRecord | DeductResult, user: str) -> None:
        super().add(record, user)
        self.facts_of[user] += 1


def _slot(user: str) -> int:
    """The cluster slot of ``user``'s bucket (every key of its calls)."""
    return key_slot(KEYS.of(user).base.encode())


def _router(budget: BudgetManager) -> ClusterScripts:
    scripts = budget._store.ensure_open()
    assert isinstance(scripts, ClusterScripts)
    return scripts


def _owners(cluster: LocalCluster) -> dict[str, RedisServer]:
    """Each user's master: the owner of its bucket's slot."""
    return {user: cluster.owner(_slot(user)) for user in USERS}


async def assert_exactly_in_buckets(
    budget: BudgetManager, told: BucketTold, users: list[str]
) -> None:
    """Redis holds exactly the facts ``told`` was told about, bucket by bucket."""
    usage = await budget.get_usage(users[0])  # (the platform's: every bucket's)
    assert usage["global"].daily.spent == told.total_charged
    for user in users:
        mine = await budget.get_usage(user)
        assert mine["user"].daily.spent == told.charged[user], user
        assert mine["user"].balance == told.credited[user] - told.charged[user], user
        assert mine["user"].held == 0, user
    expected: Counter[str] = Counter()
    for user in users:
        expected[budget.keys.of(user).ledger] += told.facts_of[user]
    assert sum(expected.values()) == told.facts
    for bucket in budget.keys.buckets():
        length = await budget.redis.xlen(bucket.ledger)
        assert length == expected[bucket.ledger], bucket.ledger
    assert await budget.redis.xlen(budget.keys.ledger) == 0, "the root has no facts"


async def test_a_bucket_moved_twice_under_traffic_loses_and_doubles_nothing(
    private_cluster: LocalCluster, tmp_path: Path
) -> None:
    cluster = private_cluster
    workers, per_worker = 40, 60  # 2,400 facts
    told = BucketTold()
    rng = random.Random(13)
    # (MIGRATE blocks the source master while it copies the slot's keys: on
    # a busy machine longer than the hot path's 0.25 s read timeout, which
    # would fail a call closed; a move is no outage, so the test waits)
    config = _config(cluster, tmp_path / "spool", redis_timeout_seconds=5)
    async with BudgetManager(config, clock=FakeClock()) as budget:
        assert budget.keys.of(SUBJECT).base == KEYS.of(SUBJECT).base
        owners = await asyncio.to_thread(_owners, cluster)
        assert len({KEYS.of(u).base for u in USERS}) == BUCKETS
        assert {m.port for m in owners.values()} == {m.port for m in cluster.masters()}
        slot = _slot(SUBJECT)
        movers = [u for u in USERS if _slot(u) == slot]
        assert len(movers) == 2
        first = owners[SUBJECT]
        targets = [m for m in cluster.masters() if m is not first]
        keyed = await budget.record_spend(movers[0], "0.5", idempotency_key="k")
        told.add(keyed, movers[0])

        async def worker(w: int) -> None:
            for n in range(per_worker):
                # a third of the facts are the moving bucket's users'
                i = w * per_worker + n
                user = movers[i % len(movers)] if n % 3 == 0 else USERS[(w + n) % 24]
                told.add(await _keyed_fact(budget, rng, user, i), user)

        async def reshard() -> None:
            for at, target in zip((600, 1500), targets, strict=True):
                while told.facts < at:
                    await asyncio.sleep(0.005)
                moved = await asyncio.to_thread(cluster.migrate_slot, slot, target)
                assert moved > 0

        await asyncio.gather(reshard(), *(worker(w) for w in range(workers)))
        assert told.facts == 1 + workers * per_worker
        assert told.spooled == 0, "a slot moving is no outage"
        await assert_exactly_in_buckets(budget, told, USERS)
        # Followed: the router sends the bucket's calls to its new owner,
        # and the other buckets' stayed where they were.
        router = _router(budget)
        assert router.redirections["MOVED"] > 0
        owner = router.topology.owners[slot]
        assert owner is not None
        assert owner.port == targets[-1].port == cluster.owner(slot).port
        for user in USERS:
            if user not in movers:
                node = router.topology.owners[_slot(user)]
                assert node is not None and node.port == owners[user].port, user
        # The idempotency records moved with the slot: a replay charges nothing.
        again = await budget.record_spend(movers[0], "0.5", idempotency_key="k")
        assert again.replayed
        await assert_exactly_in_buckets(budget, told, USERS)


async def test_a_dead_master_fails_its_buckets_closed_and_its_replica_takes_the_spool(
    replicated_cluster: LocalCluster, tmp_path: Path
) -> None:
    cluster = replicated_cluster
    told = BucketTold()
    rng = random.Random(17)
    async with BudgetManager(
        _config(cluster, tmp_path / "spool"), clock=FakeClock()
    ) as budget:
        owners = await asyncio.to_thread(_owners, cluster)
        victim = owners[SUBJECT]
        doomed = [u for u in USERS if owners[u] is victim]
        spared = [u for u in USERS if owners[u] is not victim]
        assert doomed and len({owners[u].port for u in spared}) == 2
        for n in range(72):
            user = USERS[n // 3]
            told.add(await _fact(budget, rng, user, n), user)
        await asyncio.to_thread(cluster.wait_replicated, victim)
        victim.kill()
        # Its users fail closed; everyone else is admitted and charged.
        for user in doomed:
            with pytest.raises(BudgetUnavailableError):
                await budget.check_availability(user, estimated_cost=1)
            with pytest.raises(BudgetUnavailableError):
                await budget.reserve(user, 1)
        for n, user in enumerate(spared):
            record = await _keyed_fact(budget, rng, user, 3 + 4 * n)  # a lease
            assert not record.spooled, user
            told.add(record, user)
        states = {name: b.state for name, b in budget.breaker.nodes.items()}
        assert states[f"127.0.0.1:{victim.port}"] == "open"
        assert {states[f"127.0.0.1:{owners[u].port}"] for u in spared} == {"closed"}

        # Facts keep coming during the failover: the dead master's users'
        # are spooled (a charge with spool_when_unavailable too), then
        # replayed into the promoted replica, which the router finds by
        # itself; the others' go straight in.
        async def traffic(w: int) -> None:
            for n in range(100 + w, 400, 4):  # (each worker its kind of fact)
                user = USERS[(n // 4) % 24]
                record: SpendRecord | DeductResult
                if user in spared:
                    record = await _keyed_fact(budget, rng, user, n)
                    assert not record.spooled, user
                elif n % 5 == 0:
                    amount = Decimal(rng.randint(1, 3_000_000)) * MICRO
                    record = await budget.deduct(
                        user, amount, spool_when_unavailable=True
                    )
                else:
                    record = await _fact(budget, rng, user, n)
                told.add(record, user)
                await asyncio.sleep(0.005)

        slot = _slot(SUBJECT)
        await asyncio.gather(
            *(traffic(w) for w in range(4)),
            asyncio.to_thread(cluster.wait_owner_changes, slot, victim),
        )
        assert told.spooled > 0
        await _drained(budget)
        await assert_exactly_in_buckets(budget, told, USERS)
        new_owner = _router(budget).topology.owners[slot]
        assert new_owner is not None and new_owner.port == cluster.owner(slot).port
        for user in doomed:
            await budget.check_availability(user, estimated_cost=1)
