"""``python -m bench.cluster``: spendgate through a Redis Cluster node vs one Redis.

Starts its own servers with the tests' helpers (tests/redis_server.py,
tests/redis_cluster.py), on free ports in a temporary folder, all with the
same settings (no persistence: what is timed is the client's path), and
stops them after: one ``redis-server``, and a 3-master cluster. A manager on
each (the cluster's with ``redis_cluster=True`` through a master that does
NOT own spendgate's slot: every call is routed by the client) times

- latency: ``check_availability`` and ``record_spend`` one call after
  another, the two sides interleaved call by call (host noise lands on both
  alike), each side with its PING floor through the very client its calls go
  out on; p50/p90/p99/p99.9 in µs;
- throughput: the same calls from ``--concurrency`` tasks (automatic
  pipelining per node on the cluster, per client on the single Redis).

Today every key is in one slot (``{sg}``): one master does all the work, so
this measures what the cluster path costs, not what a cluster adds (that is
the next round's keyspace). ``--json PATH`` writes the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from bench.measure import Op, interleaved_samples, summarize_ns, throughput
from bench.runner import bench_config, callers, hot_path_ops

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from redis_cluster import SG_SLOT, LocalCluster  # noqa: E402
from redis_server import RedisServer  # noqa: E402

#: every server alike, without persistence: the client's path is timed
NODE_ARGS = ("--appendonly", "no", "--save", "")
#: calls of each operation before timing starts (connections, scripts)
WARM_UP = 200


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cluster",
        description="spendgate's hot path through a Redis Cluster node vs a "
        "single Redis (starts and stops its own servers)",
    )
    parser.add_argument("--samples", type=int, default=2000, help="per op per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=0.75, help="seconds")
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    return parser.parse_args(argv)


async def _side(
    url: str, cluster: bool, users: list[str]
) -> tuple[Any, Op, dict[str, Op]]:
    """A manager, its PING floor, and its timed calls."""
    from spendgate import BudgetConfig, BudgetManager
    from spendgate.core.cluster import ClusterScripts

    prefix = f"sgcluster{uuid.uuid4().hex[:8]}"
    settings = bench_config(url, prefix).model_dump()
    settings["redis_cluster"] = cluster
    budget = BudgetManager(BudgetConfig(**settings))
    await budget.open()
    _, projects = callers(len(users), 10)
    ops = hot_path_ops(budget, users, projects)
    client = budget.redis
    scripts = budget._store.ensure_open()
    if isinstance(scripts, ClusterScripts):
        owner = scripts.topology.owners[SG_SLOT]
        assert owner is not None
        client = owner.client  # the owner's own client: the calls' way out

    async def ping(i: int) -> object:
        return await client.execute_command("PING")

    timed = {"check": ops["check_availability"], "record": ops["record_spend"]}
    return budget, ping, timed


async def measure(
    args: argparse.Namespace, single_url: str, node_url: str
) -> dict[str, Any]:
    users, _ = callers(args.users, 10)
    single, single_ping, single_ops = await _side(single_url, False, users)
    cluster, cluster_ping, cluster_ops = await _side(node_url, True, users)
    ops: dict[str, Op] = {
        "single ping": single_ping,
        "cluster ping": cluster_ping,
        **{f"single {name}": op for name, op in single_ops.items()},
        **{f"cluster {name}": op for name, op in cluster_ops.items()},
    }
    try:
        await interleaved_samples(ops, WARM_UP)
        samples: dict[str, list[int]] = {name: [] for name in ops}
        rates: dict[str, list[float]] = {}
        for r in range(args.rounds):
            got = await interleaved_samples(ops, args.samples, start=(r + 1) * 10**6)
            for name, values in got.items():
                samples[name] += values
            sides = [("single", single_ops), ("cluster", cluster_ops)]
            for side, side_ops in sides if r % 2 else sides[::-1]:  # turn about
                for name, op in side_ops.items():
                    done, seconds = await throughput(
                        op, args.concurrency, args.duration, start=(r + 7) * 10**7
                    )
                    rates.setdefault(f"{side} {name}", []).append(done / seconds)
        return {
            "latency_us": {name: summarize_ns(v) for name, v in samples.items()},
            "throughput_per_s": {
                name: sorted(v)[len(v) // 2] for name, v in rates.items()
            },
            "concurrency": args.concurrency,
        }
    finally:
        for budget in (single, cluster):
            pattern = budget.keys.pattern()
            keys = [k async for k in budget.redis.scan_iter(match=pattern)]
            for start in range(0, len(keys), 500):
                await budget.redis.delete(*keys[start : start + 500])
            await budget.aclose()


def report(results: dict[str, Any]) -> None:
    latency = results["latency_us"]
    print("latency, µs (sequential calls, interleaved)")
    print(f"{'':18}{'p50':>8}{'p90':>8}{'p99':>8}{'p99.9':>8}")
    for name, row in latency.items():
        cells = "".join(f"{row[p]:8.0f}" for p in ("p50", "p90", "p99", "p99.9"))
        print(f"{name:18}{cells}")
    for op in ("ping", "check", "record"):
        ratio = latency[f"cluster {op}"]["p50"] / latency[f"single {op}"]["p50"]
        print(f"cluster/single p50, {op}: {ratio:.2f}x")
    print(f"throughput, calls/s from {results['concurrency']} tasks (median of rounds)")
    for name, rate in results["throughput_per_s"].items():
        print(f"{name:18}{rate:10.0f}")


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    from loguru import logger

    logger.disable("spendgate")
    with tempfile.TemporaryDirectory(prefix="sg-bench-cluster-") as tmp:
        single = RedisServer(Path(tmp) / "single", extra_args=NODE_ARGS)
        cluster = LocalCluster(Path(tmp) / "cluster", node_args=NODE_ARGS)
        try:
            single.start()
            cluster.start()
            node_url = cluster.url(cluster.not_owning())
            return await measure(args, single.url, node_url)
        finally:
            single.kill()
            cluster.stop()
            logger.enable("spendgate")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = asyncio.run(main_async(args))
    report(results)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
