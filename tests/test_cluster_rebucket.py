"""A rebucketing on a Redis Cluster: from one bucket (one slot, one master)
to 16 spread over the 3 masters, then back to 1, through a master that
does not own the root's slot.

How: the session's 3-master test cluster (tests/redis_cluster.py); the
settings only (``redis_cluster=True``), as ``spendgate rebucket`` runs.
Each user's balance and spend, the project's spend and cap, a retried
fact and a refund of a charge made before the move must come out as they
were, and the keys must end up on every master (16 buckets) or on the one
that owns ``{sg}`` (1 bucket).
"""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from redis_cluster import LocalCluster
from spendgate import BudgetConfig, BudgetExceededError, BudgetManager
from spendgate.cli import main
from spendgate.errors import ConfigurationError
from spendgate.rebucket import rebucket

pytestmark = pytest.mark.redis

USERS = [f"user-{i}" for i in range(24)]


def _config(
    cluster: LocalCluster, tmp_path: Path, prefix: str, buckets: int
) -> BudgetConfig:
    return BudgetConfig(
        redis_url=cluster.url(cluster.not_owning()),
        redis_cluster=True,
        redis_connect_timeout_seconds=5,
        redis_timeout_seconds=5,
        key_prefix=prefix,
        spool_path=tmp_path / "spool",
        cluster_buckets=buckets,
        daily_user_limit=None,
        daily_project_limit=Decimal(100),
        daily_global_limit=None,
    )


def _masters_holding(cluster: LocalCluster, prefix: str) -> int:
    held = 0
    for node in cluster.masters():
        with node.client() as client:
            held += any(True for _ in client.scan_iter(match=f"{prefix}:*", count=100))
    return held


async def _state(config: BudgetConfig) -> tuple[dict[str, Decimal], Decimal]:
    async with BudgetManager(config) as budget:
        balances = {u: (await budget.get_balance(u)).total for u in USERS}
        usage = await budget.get_usage(USERS[0], "p")
        return balances, usage["project"].daily.spent


async def test_one_bucket_to_sixteen_and_back_keeps_every_balance_and_cap(
    redis_cluster: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prefix = f"rb{uuid.uuid4().hex[:8]}"
    one = _config(redis_cluster, tmp_path, prefix, 1)
    sixteen = _config(redis_cluster, tmp_path, prefix, 16)
    try:
        async with BudgetManager(one) as budget:
            for n, user in enumerate(USERS):
                await budget.add_credits(user, Decimal(10 + n), idempotency_key=f"c{n}")
                charge = await budget.record_spend(
                    user, Decimal("1.5"), "p", idempotency_key=f"r{n}"
                )
        before = await _state(one)
        assert before[1] == Decimal("36")  # 24 × 1.5
        assert _masters_holding(redis_cluster, prefix) == 1

        # (the command, as an operator runs it: the settings from the environment)
        monkeypatch.setenv("SPENDGATE_REDIS_URL", one.redis_url or "")
        monkeypatch.setenv("SPENDGATE_REDIS_CLUSTER", "true")
        monkeypatch.setenv("SPENDGATE_KEY_PREFIX", prefix)
        monkeypatch.setenv("SPENDGATE_REDIS_TIMEOUT_SECONDS", "5")
        monkeypatch.setenv("SPENDGATE_REDIS_CONNECT_TIMEOUT_SECONDS", "5")
        monkeypatch.setenv("SPENDGATE_SPOOL_PATH", str(tmp_path / "spool"))
        assert await asyncio.to_thread(main, ["rebucket", "--to", "16"]) == 0

        assert await _state(sixteen) == before
        assert _masters_holding(redis_cluster, prefix) == 3
        with pytest.raises(ConfigurationError, match="laid out for 16"):
            async with BudgetManager(one):
                pass
        async with BudgetManager(sixteen) as budget:
            again = await budget.record_spend(
                USERS[-1], Decimal("1.5"), "p", idempotency_key=f"r{len(USERS) - 1}"
            )
            assert again.replayed
            refund = await budget.refund(charge.entry_id)
            assert refund.refunded == Decimal("1.5")
            # the project's cap: 100 − 36 + 1.5 left, exactly, over every bucket
            left = Decimal(100) - before[1] + Decimal("1.5")
            lease = await budget.reserve("spender", left, "p")
            with pytest.raises(BudgetExceededError):
                await budget.reserve("another", Decimal("0.000001"), "p")
            await budget.release(lease)
            # (its connections, named for the deployment, on every master
            # it reached: the run would be refused while it is open)
            dry = await rebucket(sixteen, 1, dry_run=True)
            assert [r for r in dry.refusals if "are connected" in r]

        report = await rebucket(sixteen, 1)
        assert report.moved > 0 and not report.refusals
        balances, spent = await _state(one)
        assert spent == before[1] - Decimal("1.5")
        assert balances == {
            **before[0],
            USERS[-1]: before[0][USERS[-1]] + Decimal("1.5"),
        }
        assert _masters_holding(redis_cluster, prefix) == 1
    finally:
        for node in redis_cluster.masters():
            with node.client() as client:
                keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
                for key in keys:
                    client.delete(key)
