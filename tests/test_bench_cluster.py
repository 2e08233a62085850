"""The bench's Redis Cluster section still runs: ``python -m bench.cluster``
alone, tiny, and ``make bench``'s switch for it.

The section starts its own redis-servers (a single one, a 1-master and two
3-master clusters, on free ports, stopped after); the tiny ``make bench`` run
of test_bench_smoke.py runs it too, with :func:`assert_cluster_section`.
Asserts that every figure is there and that the split of keys and decisions
across masters is what the keyspace makes it: with one bucket every key is
under the one hash tag ``{sg}``, all on one master; sharded, each master
takes the calls of exactly the users whose buckets' slots it owns (worked
out here from the users' ids and the slot split, apart from the bench's
own account of it). No timing is asserted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from redis.crc import key_slot

from conftest import service_missing
from spendgate.core.shards import bucket_of

pytestmark = [pytest.mark.redis, pytest.mark.slow]

# bench/ is a top-level package of the checkout, not of the installed wheel.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


def require_cluster_binaries() -> None:
    """The section starts redis-servers in cluster mode, joined with redis-cli
    (fail under CI, skip elsewhere, when they are not installed)."""
    from bench.cluster import missing_binaries

    reason = missing_binaries()
    if reason:
        service_missing("Redis Cluster", reason)


def sharded_users(users: int, buckets: int, masters: int = 3) -> list[int]:
    """How many of the bench's first ``users`` users each master of a
    cluster joined by hand (``LocalCluster``'s even slot split) serves, on
    a deployment with ``buckets`` buckets."""
    highs = [round(16384 * (i + 1) / masters) - 1 for i in range(masters)]
    served = [0] * masters
    for i in range(users):
        slot = key_slot(f"{{sg:{bucket_of(f'bench-user-{i:05d}', buckets)}}}".encode())
        served[next(m for m, high in enumerate(highs) if slot <= high)] += 1
    return served


def assert_cluster_section(
    section: dict[str, Any], users: int, concurrency: list[int]
) -> None:
    """Every figure of the cluster section is there, and the split is the
    keyspace's: with one bucket, the ``{sg}`` hash tag puts every key and
    every decision on one master; sharded, each master takes the decisions
    of the users whose buckets it owns, and holds their keys."""
    ops = {"ping", "check_availability", "record_spend"}
    latency = section["latency_us"]
    assert set(latency["single"]) == set(latency["cluster"]) == ops
    assert set(latency["cluster_x_single_p50"]) == ops
    assert all(latency["cluster"][op]["p99"] > 0 for op in ops)
    rows = section["throughput"]
    assert [row["concurrency"] for row in rows] == concurrency
    names = ("single", "masters1", "masters3", "sharded3")
    for row in rows:
        for name in names:
            assert row[f"{name}_pairs_s"] > 0
        assert row["sharded3_x_masters1"] > 0
    masters = section["masters"]
    assert [len(masters[n]) for n in names] == [1, 1, 3, 3]
    for name in names[:3]:
        busy, idle = masters[name][0], masters[name][1:]
        # the throughput runs' pairs, two decisions each, all on one master
        assert busy["decisions"] > 0 and busy["decisions"] % 2 == 0
        assert busy["decisions_share"] == busy["keys_share"] == 1.0
        assert busy["keys"] >= users  # at least each user's counters
        assert (busy["buckets"], busy["users"]) == (1, users)
        assert busy["cpu_us_per_decision"] > 0 and busy["script_us_per_decision"] > 0
        for m in idle:  # the other masters of the 3: nothing at all
            assert m["keys"] == m["decisions"] == m["buckets"] == m["users"] == 0
            assert m["cpu_us_per_decision"] is m["script_us_per_decision"] is None
    buckets = section["sharded_buckets"]
    assert buckets == 64
    sharded = masters["sharded3"]
    assert [m["users"] for m in sharded] == sharded_users(users, buckets)
    assert sum(m["buckets"] for m in sharded) == buckets
    assert all(m["buckets"] > 0 for m in sharded)  # 18, 23 and 23 of 64
    for m in sharded:
        if m["users"]:  # a check and a record for the same user: one master
            assert m["decisions"] > 0 and m["decisions"] % 2 == 0
            assert m["keys"] >= m["users"]
            assert m["cpu_us_per_decision"] > 0
        else:
            assert m["keys"] == m["decisions"] == 0
    assert sum(m["decisions_share"] for m in sharded) == pytest.approx(1)
    ceilings = section["ceiling_decisions_s"]
    assert set(ceilings) == set(names)
    assert all(ceilings[name] > 0 for name in names)
    for by_tasks in section["ceiling_decisions_s_by_tasks"].values():
        assert list(by_tasks) == [str(c) for c in concurrency]
    assert section["workload"]["users"] == users


def test_make_bench_runs_the_cluster_section_unless_told_not_to() -> None:
    from bench.__main__ import parse_args
    from bench.cluster_report import cluster_markdown

    assert parse_args([]).cluster is True
    assert parse_args(["--no-cluster"]).cluster is False
    # the report says why the section is missing, rather than leaving it out
    assert "Not measured in this run (`--no-cluster`)." in cluster_markdown(None)
    skipped = cluster_markdown({"skipped": "redis-cli is not installed"})
    assert "Not measured in this run: redis-cli is not installed." in skipped


def test_the_cluster_bench_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.cluster import main as bench_main

    require_cluster_binaries()
    out = tmp_path / "cluster.json"
    argv = ["--samples", "20", "--rounds", "1", "--duration", "0.05", "--users", "4"]
    assert bench_main([*argv, "--concurrency", "4", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "#### Latency through a cluster node" in printed
    assert "| cluster, 3 masters | 3 (:" in printed
    assert "| cluster, 3 masters, 64 buckets | 3 (:" in printed
    assert "#### Ceiling: decisions per second with a core per master" in printed
    assert_cluster_section(json.loads(out.read_text()), users=4, concurrency=[4])
