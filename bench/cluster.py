"""The bench's Redis Cluster section (``make bench``; alone, ``python -m
bench.cluster``): spendgate through a cluster node vs one Redis, and on one
master vs three.

Starts its own servers with the tests' helpers (tests/redis_server.py,
tests/redis_cluster.py), on free ports in a temporary folder, all with the
same settings (no persistence: what is timed is the client's path), and
stops them after: one ``redis-server``, a 1-master cluster and a 3-master
cluster. A deployment on each (``redis_cluster=True`` on the clusters, the
3-master one named by a master that does NOT own spendgate's slot: every
call is routed by the client), its users pre-filled as the main bench's.
In each round:

- latency: ``check_availability`` and ``record_spend`` one call after
  another on the single Redis and through the 3-master cluster, interleaved
  call by call with each side's PING floor (through the very client its
  calls go out on), so host noise lands on all alike;
- throughput: check + record pairs from each concurrency, on each of the
  three, taking turns in slices of a fifth of ``duration_s`` (automatic
  pipelining per node on a cluster, per client on the single Redis), with
  what each master did meanwhile (:mod:`bench.cluster_stats`: Redis CPU per
  decision, the split of keys and of calls).

Today every key is in one slot (the ``{sg}`` hash tag): one master does all
the work, which the split shows; a keyspace that spreads users across
masters is not built yet.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import cluster_stats
from bench.common import loadavg
from bench.measure import Op, interleaved_samples, summarize_ns, throughput
from bench.runner import Options, bench_config, callers, hot_path_ops, prefill

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

from redis_cluster import SG_SLOT, LocalCluster, start_cluster  # noqa: E402
from redis_server import RedisServer  # noqa: E402

#: every server alike, without persistence: the client's path is timed
NODE_ARGS = ("--appendonly", "no", "--save", "")
#: calls of each operation before timing starts (connections, scripts)
WARM_UP = 200
#: the deployments, in the report's order: (name, masters; 0 = not a cluster)
TARGETS = (("single", 0), ("masters1", 1), ("masters3", 3))
#: slices of each throughput run (``duration_s`` in all per deployment)
SLICES = 5
#: the latency subjects of each side
LATENCY_OPS = ("ping", "check_availability", "record_spend")


@dataclass
class Deployment:
    """One deployment on its own servers: the manager, its masters, its ops."""

    name: str
    budget: Any
    masters: list[RedisServer]
    ping: Op
    pair: Op
    ops: dict[str, Op]


def missing_binaries() -> str | None:
    """Why the section cannot run here, or ``None``."""
    for binary in ("redis-server", "redis-cli"):
        if shutil.which(binary) is None:
            return f"{binary} is not installed"
    return None


async def _deploy(
    name: str, url: str, masters: list[RedisServer], cluster: bool, options: Options
) -> Deployment:
    from spendgate import BudgetConfig, BudgetManager
    from spendgate.core.cluster import ClusterScripts

    settings = bench_config(url, f"sgcluster{uuid.uuid4().hex[:8]}").model_dump()
    settings["redis_cluster"] = cluster
    budget = BudgetManager(BudgetConfig(**settings))
    await budget.open()
    users, projects = callers(options.users, options.projects)
    await prefill(budget, users, projects)
    ops = hot_path_ops(budget, users, projects)
    client = budget.redis
    scripts = budget._store.ensure_open()
    if isinstance(scripts, ClusterScripts):
        # the PING floor through the owner's own client: the calls' way out
        owner = scripts.topology.owners[SG_SLOT]
        assert owner is not None
        client = owner.client

    async def ping(i: int) -> object:
        return await client.execute_command("PING")

    timed = {"ping": ping, **{op: ops[op] for op in LATENCY_OPS[1:]}}
    return Deployment(name, budget, masters, ping, ops["check+record"], timed)


async def measure(options: Options, deployments: list[Deployment]) -> dict[str, Any]:
    """Latency (the single Redis vs the 3-master cluster) and throughput
    (every deployment), ``options.rounds`` rounds, the order turning."""
    sides = {"single": deployments[0], "cluster": deployments[-1]}
    ops = {f"{side} {op}": d.ops[op] for side, d in sides.items() for op in LATENCY_OPS}
    await interleaved_samples(ops, WARM_UP)
    for d in deployments:
        await throughput(d.pair, max(options.concurrency), 0.1)
    samples: dict[str, list[int]] = {name: [] for name in ops}
    runs: dict[tuple[str, int], list[tuple[int, float]]] = {}
    totals = {d.name: [{} for _ in d.masters] for d in deployments}
    for r in range(options.rounds):
        options.log(f"bench: cluster round {r + 1}/{options.rounds}")
        got = await interleaved_samples(ops, options.samples, start=(r + 1) * 10**6)
        for name, values in got.items():
            samples[name] += values
        for c in options.concurrency:
            # each run cut into slices, the deployments taking turns slice by
            # slice: the host's load, which moves by the second here, lands
            # on the three alike rather than on whichever ran in a bad second
            for k in range(SLICES):
                turn = (r + k) % len(deployments)
                for d in deployments[turn:] + deployments[:turn]:
                    before = cluster_stats.snapshots(d.masters)
                    slice_s, start = options.duration_s / SLICES, (r * SLICES + k + 7)
                    done, seconds = await throughput(d.pair, c, slice_s, start * 10**7)
                    cluster_stats.add_delta(
                        totals[d.name], before, cluster_stats.snapshots(d.masters)
                    )
                    runs.setdefault((d.name, c), []).append((done, seconds))
    return {
        "latency_us": _latency(samples),
        "throughput": _throughput_rows(options, deployments, runs),
        "masters": {
            d.name: cluster_stats.per_master(d.masters, totals[d.name])
            for d in deployments
        },
    }


def _latency(samples: dict[str, list[int]]) -> dict[str, Any]:
    """Each side's summaries, each p50 × its own PING's, and cluster ÷ single."""
    out: dict[str, Any] = {}
    for name, values in samples.items():
        side, op = name.split(" ", 1)
        out.setdefault(side, {})[op] = summarize_ns(values)
    for side in ("single", "cluster"):
        floor = out[side]["ping"]["p50"]
        for summary in out[side].values():
            summary["x_ping_p50"] = summary["p50"] / floor
    out["cluster_x_single_p50"] = {
        op: out["cluster"][op]["p50"] / out["single"][op]["p50"] for op in LATENCY_OPS
    }
    return out


def _throughput_rows(
    options: Options,
    deployments: list[Deployment],
    runs: dict[tuple[str, int], list[tuple[int, float]]],
) -> list[dict[str, Any]]:
    rows = []
    for c in options.concurrency:
        row: dict[str, Any] = {"concurrency": c}
        for d in deployments:
            got = runs[(d.name, c)]
            row[f"{d.name}_pairs_s"] = sum(n for n, _ in got) / sum(s for _, s in got)
            row[f"{d.name}_pairs_s_slices"] = [n / s for n, s in got]
        row["masters3_x_masters1"] = row["masters3_pairs_s"] / row["masters1_pairs_s"]
        rows.append(row)
    return rows


async def section(options: Options) -> dict[str, Any]:
    """Start the servers, measure, stop them: the section's figures (or
    ``{"skipped": reason}`` where redis-server or redis-cli is missing)."""
    from loguru import logger

    reason = missing_binaries()
    if reason is not None:
        options.log(f"bench: no cluster section: {reason}")
        return {"skipped": reason}
    load_at_start = loadavg()
    logger.disable("spendgate")
    deployments: list[Deployment] = []
    with tempfile.TemporaryDirectory(prefix="sg-bench-cluster-") as tmp:
        single = RedisServer(Path(tmp) / "single", extra_args=NODE_ARGS)
        clusters: list[LocalCluster] = []
        try:
            options.log("bench: cluster section: starting 1 Redis, 1 and 3 masters")
            clusters = await _start(Path(tmp), single)
            urls = [single.url, *(c.url(_entry(c)) for c in clusters)]
            masters = [[single], *(c.masters() for c in clusters)]
            for (name, count), url, nodes in zip(TARGETS, urls, masters, strict=True):
                deployments.append(await _deploy(name, url, nodes, count > 0, options))
            figures = await measure(options, deployments)
        finally:
            for d in deployments:
                await d.budget.aclose()
            single.kill()
            for cluster in clusters:
                cluster.stop()
            logger.enable("spendgate")
    return {
        **figures,
        "workload": {"users": options.users, "projects": options.projects},
        "node_args": list(NODE_ARGS),
        "loadavg_start": load_at_start,
        "loadavg_end": loadavg(),
    }


async def _start(directory: Path, single: RedisServer) -> list[LocalCluster]:
    """The single Redis and both clusters, started side by side (a cluster
    waits about 2 s to serve after its slots are given out)."""

    def cluster(masters: int) -> LocalCluster:
        return start_cluster(
            directory / f"masters{masters}",
            masters=masters,
            node_args=NODE_ARGS,
            join_by_hand=True,  # both alike (redis-cli refuses 1 master)
        )

    started = await asyncio.gather(
        asyncio.to_thread(single.start),
        asyncio.to_thread(cluster, 1),
        asyncio.to_thread(cluster, 3),
        return_exceptions=True,
    )
    made = [c for c in started[1:] if isinstance(c, LocalCluster)]
    failed = [e for e in started if isinstance(e, BaseException)]
    if failed:
        for c in made:
            c.stop()
        raise failed[0]
    return made


def _entry(cluster: LocalCluster) -> RedisServer:
    """The node a deployment names: one that does not own spendgate's slot,
    where there is one."""
    masters = cluster.masters()
    return cluster.not_owning() if len(masters) > 1 else masters[0]


def parse_args(argv: list[str] | None = None) -> tuple[Options, Path | None]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cluster",
        description="spendgate's hot path through a Redis Cluster node vs a "
        "single Redis, and on 1 master vs 3 (starts and stops its own servers)",
    )
    parser.add_argument("--samples", type=int, default=2000, help="per op per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--projects", type=int, default=10)
    parser.add_argument(
        "--concurrency", default="1,16,64", help="comma-separated (default 1,16,64)"
    )
    parser.add_argument("--duration", type=float, default=0.75, help="seconds")
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    args = parser.parse_args(argv)
    options = Options(
        rounds=args.rounds,
        samples=args.samples,
        users=args.users,
        projects=args.projects,
        concurrency=tuple(int(c) for c in args.concurrency.split(",") if c.strip()),
        duration_s=args.duration,
    )
    return options, args.json


def main(argv: list[str] | None = None) -> int:
    from bench.cluster_report import cluster_markdown

    options, json_path = parse_args(argv)
    figures = asyncio.run(section(options))
    print("\n".join(cluster_markdown(figures)))
    if json_path is not None:
        json_path.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
