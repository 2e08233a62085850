"""Four app processes at users' caps on a sharded Redis Cluster: exact at
each cap, with the work spread over every master.

How: the session's 3-master test cluster and the four processes of
tests/test_cluster_processes.py (tests/cap_worker.py), now with
``cluster_buckets=64``. Six users are picked so that their buckets' slots
(``{sg:<bucket>}``, found with ``redis.crc.key_slot`` and the cluster's
slot map) sit two on each master, each user with a cap of its own. At one
wall-clock instant each process fires 100 reserves per user at once (2,400
in all, 400 per user): exactly each user's N are admitted, the others
refused by the user's daily cap, and each user's bucket holds exactly N x
the amount. Then each process settles half of its leases and releases the
rest, all at once: nothing is held, each user has spent exactly its settled
ones and its bucket's ledger has one entry each. A second burst admits
exactly what the released leases gave back. Every master holds keys of
the deployment (the buckets spread the work); the root's slot holds none of
a user's.

A user's caps are decided in its bucket, on one master, atomically: the
bound on overshoot is 0 at every user's cap, as with one bucket.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

from redis_cluster import LocalCluster
from redis_server import RedisServer
from spendgate import BudgetConfig, BudgetManager
from spendgate.core.shards import bucket_of
from test_cluster_processes import (
    AMOUNT,
    DAY,
    LEAD_SECONDS,
    NOW,
    PROCESSES,
    Workers,
    _scenario,
    _settings,
    _split,
    workers,  # noqa: F401  (the fixture)
)
from test_cluster_processes import _burst as _scenario_burst

pytestmark = [pytest.mark.slow, pytest.mark.redis]

BUCKETS = 64
CALLS = 100  # reserves per process and user
#: N, the reserves each user's cap fits, two users per master
ADMITS = (37, 53, 71, 89, 101, 149)


def _owners(cluster: LocalCluster, prefix: str) -> dict[int, RedisServer]:
    """The master that owns each bucket's slot."""
    masters = cluster.masters()
    with masters[0].client() as client:
        slots = cluster._slot_map(client)
    owners = {}
    for bucket in range(BUCKETS):
        slot = key_slot(f"{prefix}:{{sg:{bucket}}}:x".encode())
        port = next(p for start, end, p in slots if start <= slot <= end)
        owners[bucket] = next(m for m in masters if m.port == port)
    return owners


def _users(owners: dict[int, RedisServer]) -> list[str]:
    """Two users on each master, in buckets of their own."""
    by_master: dict[int, list[str]] = {}
    taken: set[int] = set()
    n = 0
    while sum(len(u) for u in by_master.values()) < 2 * len(set(owners.values())):
        user, n = f"member-{n}", n + 1
        bucket = bucket_of(user, BUCKETS)
        mine = by_master.setdefault(owners[bucket].port, [])
        if bucket not in taken and len(mine) < 2:
            taken.add(bucket)
            mine.append(user)
    return [user for users in by_master.values() for user in users]


@pytest.fixture
async def verifier(
    redis_cluster: LocalCluster, tmp_path: Path
) -> AsyncIterator[BudgetManager]:
    """A sharded manager of the test's own, on a fresh prefix, that sets the
    caps and reads what Redis holds; the prefix's keys are deleted after."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    settings = _settings(redis_cluster, prefix, tmp_path / "spool-verifier")
    config = BudgetConfig(**settings, cluster_buckets=BUCKETS)
    async with BudgetManager(config, clock=lambda: NOW) as budget:
        yield budget
        keys = [k async for k in budget.redis.scan_iter(match=f"{prefix}:*")]
        for key in keys:
            await budget.redis.delete(key)


def _burst(processes: Workers, users: list[str]) -> list[dict[str, Any]]:
    """100 reserves per user from each process, all started at one instant."""
    calls = [[user, None] for _ in range(PROCESSES * CALLS) for user in users]
    at = time.time() + LEAD_SECONDS
    return processes.send_all(
        [
            {"op": "reserve", "at": at, "amount": str(AMOUNT), "calls": share}
            for share in _split(calls)
        ]
    )


def _admitted(answers: list[dict[str, Any]], users: list[str]) -> dict[str, int]:
    """How many reserves of each user were admitted; every answer was a
    lease or a refusal by the user's daily cap."""
    assert [a["errors"] for a in answers] == [[]] * PROCESSES
    refused = sum(a["refused"].get("user/daily", 0) for a in answers)
    admitted = sum(len(a["admitted"]) for a in answers)
    assert refused + admitted == PROCESSES * CALLS * len(users)
    assert all(set(a["refused"]) <= {"user/daily"} for a in answers)
    counts = dict.fromkeys(users, 0)
    for lease_id in (lease for a in answers for lease in a["admitted"]):
        counts[_user_of(lease_id, users)] += 1
    return counts


def _user_of(lease_id: str, users: list[str]) -> str:
    """The user a lease was granted to: the one of the bucket its id names
    (each user has a bucket of its own here)."""
    bucket = int(lease_id.rsplit("~", 1)[1])
    return next(user for user in users if bucket_of(user, BUCKETS) == bucket)


async def _counters(budget: BudgetManager, user: str) -> tuple[Decimal, Decimal]:
    """What the user holds and has spent today, as its bucket has them (and
    get_usage agrees)."""
    keys = budget.keys.of(user)
    held = Decimal(int(await budget.redis.get(keys.held("user", user)) or 0))
    spent = Decimal(int(await budget.redis.get(keys.day(DAY, "user", user)) or 0))
    held, spent = held / 1_000_000, spent / 1_000_000
    usage = (await budget.get_usage(user))["user"]
    assert (usage.held, usage.daily.spent) == (held, spent)
    return held, spent


async def test_four_processes_at_users_caps_on_every_master_admit_exactly(
    redis_cluster: LocalCluster,
    verifier: BudgetManager,
    workers: Workers,  # noqa: F811
    tmp_path: Path,
) -> None:
    prefix = verifier.config.key_prefix
    owners = _owners(redis_cluster, prefix)
    users = _users(owners)
    assert len({owners[bucket_of(u, BUCKETS)].port for u in users}) == 3
    caps = dict(zip(users, ADMITS, strict=True))
    for user, n in caps.items():
        await verifier.set_limits("user", user, daily=AMOUNT * n)
    settings = _settings(redis_cluster, prefix, tmp_path / "sp")
    await asyncio.to_thread(workers.start, {**settings, "cluster_buckets": BUCKETS})

    answers = await asyncio.to_thread(_burst, workers, users)
    assert _admitted(answers, users) == caps
    for user, n in caps.items():
        assert await _counters(verifier, user) == (AMOUNT * n, 0)

    # each process settles half of its leases and releases the others, at once
    settle = [a["admitted"][: (len(a["admitted"]) + 1) // 2] for a in answers]
    ended = await asyncio.to_thread(
        workers.send_all,
        [{"op": "end", "at": time.time() + LEAD_SECONDS, "settle": s} for s in settle],
    )
    assert [e["errors"] for e in ended] == [[]] * PROCESSES
    settled = {user: 0 for user in users}
    for lease_id in (lease for share in settle for lease in share):
        settled[_user_of(lease_id, users)] += 1
    for user in users:
        assert await _counters(verifier, user) == (0, AMOUNT * settled[user])
        ledger = verifier.keys.of(user).ledger
        assert await verifier.redis.xlen(ledger) == settled[user]

    # what the released leases gave back is admitted again, exactly
    again = await asyncio.to_thread(_burst, workers, users)
    assert _admitted(again, users) == {u: caps[u] - settled[u] for u in users}
    ended = await asyncio.to_thread(
        workers.send_all,
        [{"op": "end", "at": time.time() + LEAD_SECONDS, "settle": []}] * PROCESSES,
    )
    assert [e["errors"] for e in ended] == [[]] * PROCESSES
    assert sum(e["released"] for e in ended) == sum(caps.values()) - len(
        [lease for share in settle for lease in share]
    )
    for user in users:
        assert await _counters(verifier, user) == (0, AMOUNT * settled[user])

    # the work was spread: every master holds keys, the root's none of a user's
    for master in redis_cluster.masters():
        with master.client() as client:
            assert list(client.scan_iter(match=f"{prefix}:{{sg:*", count=1000))
    root = [k async for k in verifier.redis.scan_iter(match=f"{prefix}:{{sg}}:*")]
    assert not [k for k in root if any(u.encode() in k for u in users)]
    # every process exits cleanly, said nothing on stderr and spooled nothing
    assert await asyncio.to_thread(workers.close) == [0] * PROCESSES
    logs = sorted(tmp_path.glob("worker-*.log"))
    assert [log.read_text() for log in logs] == [""] * PROCESSES
    assert not list(tmp_path.glob("sp-*/**/seg-*"))


@pytest.mark.parametrize("scope", ["project", "global"])
async def test_four_processes_at_a_shared_cap_never_pass_it(
    scope: str,
    redis_cluster: LocalCluster,
    verifier: BudgetManager,
    workers: Workers,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A project's or the platform's cap, lent to the buckets in chunks of
    5 calls (spendgate.ops.escrow_admission): 400 reserves at once from 4
    processes admit at most the N that fit, and (what one process's
    borrowing for a bucket leaves unused when another's refusal sweeps) at
    most a chunk per process fewer. The scope holds exactly what was
    admitted, summed over the buckets."""
    scenario = _scenario(scope)
    n, chunk = scenario.admits, AMOUNT * 5
    await verifier.set_limits(scope, scenario.scope_id or None, daily=AMOUNT * n)
    settings = _settings(redis_cluster, verifier.config.key_prefix, tmp_path / "sp")
    more = {"cluster_buckets": BUCKETS, "escrow_chunk": str(chunk)}
    await asyncio.to_thread(workers.start, {**settings, **scenario.defaults, **more})

    answers = await asyncio.to_thread(_scenario_burst, workers, scenario)
    assert [a["errors"] for a in answers] == [[]] * PROCESSES
    admitted = sum(len(a["admitted"]) for a in answers)
    refused = sum(sum(a["refused"].values()) for a in answers)
    assert admitted + refused == PROCESSES * CALLS
    assert {why for a in answers for why in a["refused"]} <= {f"{scope}/daily"}
    print(f"{scope}: {admitted} of {n} admitted")
    assert n - PROCESSES * 5 <= admitted <= n
    user, project = scenario.calls[0]
    usage = (await verifier.get_usage(user, project))[scope]
    assert usage.held == AMOUNT * admitted
