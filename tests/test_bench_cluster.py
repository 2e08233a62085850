"""The bench's Redis Cluster section still runs: ``python -m bench.cluster``
alone, tiny, and ``make bench``'s switch for it.

The section starts its own redis-servers (a single one, a 1-master and a
3-master cluster, on free ports, stopped after); the tiny ``make bench`` run
of test_bench_smoke.py runs it too, with :func:`assert_cluster_section`.
Asserts that every figure is there and that the split of keys and decisions
across masters is what today's keyspace makes it (every key under the one
hash tag ``{sg}``: all on one master); no timing is asserted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import service_missing

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


def assert_cluster_section(
    section: dict[str, Any], users: int, concurrency: list[int]
) -> None:
    """Every figure of the cluster section is there, and the split is today's:
    the ``{sg}`` hash tag puts every key and every decision on one master."""
    ops = {"ping", "check_availability", "record_spend"}
    latency = section["latency_us"]
    assert set(latency["single"]) == set(latency["cluster"]) == ops
    assert set(latency["cluster_x_single_p50"]) == ops
    assert all(latency["cluster"][op]["p99"] > 0 for op in ops)
    rows = section["throughput"]
    assert [row["concurrency"] for row in rows] == concurrency
    for row in rows:
        for name in ("single", "masters1", "masters3"):
            assert row[f"{name}_pairs_s"] > 0
    masters = section["masters"]
    assert [len(masters[n]) for n in ("single", "masters1", "masters3")] == [1, 1, 3]
    for rows_of in masters.values():
        busy, idle = rows_of[0], rows_of[1:]
        # the throughput runs' pairs, two decisions each, all on one master
        assert busy["decisions"] > 0 and busy["decisions"] % 2 == 0
        assert busy["decisions_share"] == busy["keys_share"] == 1.0
        assert busy["keys"] >= users  # at least each user's counters
        assert busy["cpu_us_per_decision"] > 0 and busy["script_us_per_decision"] > 0
        for m in idle:  # the other masters of the 3: nothing at all
            assert m["keys"] == m["decisions"] == 0
            assert m["cpu_us_per_decision"] is m["script_us_per_decision"] is None
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
    assert_cluster_section(json.loads(out.read_text()), users=4, concurrency=[4])
