"""The bench's Redis Cluster section (``make bench``; alone, ``python -m
bench.cluster``): spendgate through a cluster node vs one Redis, on one
master vs three, and sharded over three.

Starts its own servers with the tests' helpers (tests/redis_server.py,
tests/redis_cluster.py), on free ports in a temporary folder, all with the
same settings (no persistence: what is timed is the client's path), and
stops them after: one ``redis-server``, a 1-master cluster and two 3-master
clusters. A deployment on each (``redis_cluster=True`` on the clusters,
named by a master that does NOT own spendgate's ``{sg}`` slot: every call
is routed by the client), its users pre-filled as the main bench's. Three
keep every key in one slot (one bucket, the default); the fourth is
sharded (``cluster_buckets`` = :data:`SHARDED_BUCKETS`), so its users'
keys are spread over the three masters. A sharded deployment refuses
project and global caps (no bucket sees their whole spend), so it runs
with the user cap alone; the scripts read and write every scope's counters
either way, and only compare fewer of them to caps.
In each round:

- latency: ``check_availability`` and ``record_spend`` one call after
  another on the single Redis and through the 3-master cluster, interleaved
  call by call with each side's PING floor (through the very client its
  calls go out on), so host noise lands on all alike;
- throughput: check + record pairs from each concurrency, on each of the
  four, taking turns in slices of a fifth of ``duration_s`` (automatic
  pipelining per node on a cluster, per client on the single Redis), with
  what each master did meanwhile (:mod:`bench.cluster_stats`: Redis CPU per
  decision, the split of keys and of calls, and the ceiling that makes).

With one bucket every key is in one slot (the ``{sg}`` hash tag): one
master does all the work, which the split shows. Sharded, each master takes
the calls of the users whose buckets it owns: the split of buckets and
users is reported beside the split of keys and calls.
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
#: the sharded deployment's buckets (each master of three owns about a third)
SHARDED_BUCKETS = 64
#: the deployments, in the report's order: (name, masters: 0 = not a
#: cluster, buckets)
TARGETS = (
    ("single", 0, 1),
    ("masters1", 1, 1),
    ("masters3", 3, 1),
    ("sharded3", 3, SHARDED_BUCKETS),
)
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
    #: the cluster it runs on (``None``: the single Redis)
    cluster: LocalCluster | None = None


def missing_binaries() -> str | None:
    """Why the section cannot run here, or ``None``."""
    for binary in ("redis-server", "redis-cli"):
        if shutil.which(binary) is None:
            return f"{binary} is not installed"
    return None


async def _deploy(
    name: str,
    url: str,
    masters: list[RedisServer],
    cluster: LocalCluster | None,
    buckets: int,
    options: Options,
) -> Deployment:
    from spendgate import BudgetConfig, BudgetManager
    from spendgate.core.cluster import ClusterScripts

    settings = bench_config(url, f"sgcluster{uuid.uuid4().hex[:8]}").model_dump()
    settings["redis_cluster"] = cluster is not None
    if buckets > 1:  # (no bucket could decide a project's or the global cap)
        settings.update(
            cluster_buckets=buckets, daily_project_limit=None, daily_global_limit=None
        )
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
    pair = ops["check+record"]
    return Deployment(name, budget, masters, ping, pair, timed, cluster)


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
    # what each master did, by deployment and concurrency
    totals: dict[tuple[str, int], list[dict[str, float]]] = {
        (d.name, c): [{} for _ in d.masters]
        for d in deployments
        for c in options.concurrency
    }
    for r in range(options.rounds):
        options.log(f"bench: cluster round {r + 1}/{options.rounds}")
        got = await interleaved_samples(ops, options.samples, start=(r + 1) * 10**6)
        for name, values in got.items():
            samples[name] += values
        for c in options.concurrency:
            # each run cut into slices, the deployments taking turns slice by
            # slice: the host's load, which moves by the second here, lands
            # on all alike rather than on whichever ran in a bad second
            for k in range(SLICES):
                turn = (r + k) % len(deployments)
                for d in deployments[turn:] + deployments[:turn]:
                    before = cluster_stats.snapshots(d.masters)
                    slice_s, start = options.duration_s / SLICES, (r * SLICES + k + 7)
                    done, seconds = await throughput(d.pair, c, slice_s, start * 10**7)
                    cluster_stats.add_delta(
                        totals[(d.name, c)], before, cluster_stats.snapshots(d.masters)
                    )
                    runs.setdefault((d.name, c), []).append((done, seconds))
    return {
        "latency_us": _latency(samples),
        "throughput": _throughput_rows(options, deployments, runs),
        **(await _per_master(options, deployments, totals)),
    }


async def _per_master(
    options: Options,
    deployments: list[Deployment],
    totals: dict[tuple[str, int], list[dict[str, float]]],
) -> dict[str, Any]:
    """What each master did over every throughput run, with its share of
    the buckets and users, and each deployment's ceiling: over every run,
    and at each concurrency (a master's pipelines are as deep as the calls
    in flight to it, and deeper ones cost less CPU per decision)."""
    users, _ = callers(options.users, options.projects)
    masters, ceilings, by_tasks = {}, {}, {}
    for d in deployments:
        mine = [totals[(d.name, c)] for c in options.concurrency]
        rows = cluster_stats.per_master(d.masters, cluster_stats.summed(mine))
        split = await asyncio.to_thread(_bucket_split, d, users)
        masters[d.name] = [{**r, **more} for r, more in zip(rows, split, strict=True)]
        ceilings[d.name] = cluster_stats.ceiling(masters[d.name])
        by_tasks[d.name] = {
            str(c): cluster_stats.ceiling(cluster_stats.decisions(t))
            for c, t in zip(options.concurrency, mine, strict=True)
        }
    return {
        "masters": masters,
        "ceiling_decisions_s": ceilings,
        "ceiling_decisions_s_by_tasks": by_tasks,
    }


def _bucket_split(d: Deployment, users: list[str]) -> list[dict[str, int]]:
    """Per master of ``d``: how many of the deployment's buckets (hash tags)
    it owns the slots of, and how many of the workload's users are in them."""
    from redis.crc import key_slot

    keys = d.budget.keys
    place = {m.port: i for i, m in enumerate(d.masters)}

    def where(bucket: Any) -> int:
        if d.cluster is None:
            return 0
        return place[d.cluster.owner(key_slot(bucket.base.encode())).port]

    home = {bucket.base: where(bucket) for bucket in keys.buckets()}
    split = [{"buckets": 0, "users": 0} for _ in d.masters]
    for i in home.values():
        split[i]["buckets"] += 1
    for user in users:
        split[home[keys.of(user).base]]["users"] += 1
    return split


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
        one = row["masters1_pairs_s"]
        row["masters3_x_masters1"] = row["masters3_pairs_s"] / one
        row["sharded3_x_masters1"] = row["sharded3_pairs_s"] / one
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
            options.log(
                "bench: cluster section: starting 1 Redis, 1 master, 3 masters twice"
            )
            clusters = await _start(Path(tmp), single)
            urls = [single.url, *(c.url(_entry(c)) for c in clusters)]
            masters = [[single], *(c.masters() for c in clusters)]
            on: list[LocalCluster | None] = [None, *clusters]
            for (name, _, buckets), url, nodes, cluster in zip(
                TARGETS, urls, masters, on, strict=True
            ):
                deployments.append(
                    await _deploy(name, url, nodes, cluster, buckets, options)
                )
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
        "sharded_buckets": SHARDED_BUCKETS,
        "node_args": list(NODE_ARGS),
        "loadavg_start": load_at_start,
        "loadavg_end": loadavg(),
    }


async def _start(directory: Path, single: RedisServer) -> list[LocalCluster]:
    """The single Redis and the clusters (:data:`TARGETS`' order), started
    side by side (a cluster waits about 2 s to serve after its slots are
    given out)."""

    def cluster(name: str, masters: int) -> LocalCluster:
        return start_cluster(
            directory / name,
            masters=masters,
            node_args=NODE_ARGS,
            join_by_hand=True,  # all alike (redis-cli refuses 1 master)
        )

    started = await asyncio.gather(
        asyncio.to_thread(single.start),
        *(asyncio.to_thread(cluster, n, m) for n, m, _ in TARGETS if m),
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
        "single Redis, on 1 master vs 3, and sharded over 3 (starts and stops "
        "its own servers)",
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
