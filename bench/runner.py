"""One benchmark run: floor, spendgate and the peer, interleaved in rounds.

Every round first times latency, each side (spendgate, the peer) in turn
with its subjects (its PING floor and its calls) interleaved call by call,
then throughput from 1, 16, 64 and 256 concurrent tasks, each subject in
turn; the order rotates from round to round, so machine noise lands on all
subjects alike. After the rounds: the overshoot test, import times, Redis
memory per active user-day, machine facts and Redis ``INFO``; every key
the run created is deleted; then the Redis Cluster section
(:mod:`bench.cluster`, on servers of its own, started and stopped by it),
and the results are written.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bench import deduct_workload, featured_workload, footprint
from bench import results as outputs
from bench.common import (
    CHECK_COST,
    DEFAULT_REDIS_URL,
    PREFILL,
    RECORD_COST,
    RESULTS_DIR,
    USER_LIMIT,
    delete_prefix,
    loadavg,
)
from bench.measure import Op, interleaved_samples, throughput

T = TypeVar("T")


@dataclass
class Options:
    """What one run measures, and how much of it."""

    redis_url: str = DEFAULT_REDIS_URL
    #: interleaved rounds
    rounds: int = 5
    #: sequential samples per operation per round
    samples: int = 2000
    #: concurrent task counts for the throughput runs
    concurrency: tuple[int, ...] = (1, 16, 64, 256)
    #: seconds per throughput run, per subject per concurrency per round
    duration_s: float = 0.75
    #: distinct users the calls rotate over (each pre-filled to 50 %)
    users: int = 1000
    #: distinct projects (0 = calls without a project)
    projects: int = 10
    #: measure the peer too (installs it into bench/.peer-venv on first use)
    peer: bool = True
    #: the Redis Cluster section (bench.cluster: servers of its own)
    cluster: bool = True
    overshoot_tasks: int = 200
    overshoot_limit: int = 10
    #: fresh interpreters per import-time measurement
    import_repeat: int = 7
    #: users simulated for the memory measurement
    memory_users: int = 50
    out_dir: Path = RESULTS_DIR
    chart: bool = True
    #: how the run was started, for the report
    command: str = "bench.runner.run(Options(...))"
    log: Callable[[str], None] = field(default=print, repr=False)


#: the calls timed one after another, each against the PING floor
SEQUENTIAL = ("check_availability", "record_spend", "reserve+settle")


def callers(users: int, projects: int) -> tuple[list[str], list[str | None]]:
    """The workload's user ids and project ids (``[None]``: no project)."""
    project_ids: list[str | None] = [f"bench-project-{i:03d}" for i in range(projects)]
    return [f"bench-user-{i:05d}" for i in range(users)], project_ids or [None]


def bench_config(redis_url: str, prefix: str, **changes: Any) -> Any:
    """The ``BudgetConfig`` of the workload: a per-user daily cap of
    ``USER_LIMIT``, project and global caps far above what a run spends
    (and ``changes``: settings of a deployment of its own)."""
    from spendgate import BudgetConfig

    return BudgetConfig(
        redis_url=redis_url,
        key_prefix=prefix,
        daily_user_limit=USER_LIMIT,
        daily_project_limit=10**9,
        daily_global_limit=10**9,
        **changes,
    )


async def prefill(budget: Any, users: list[str], projects: list[str | None]) -> None:
    """Charge every user ``PREFILL`` (half the cap), projects in turn."""
    for i, user in enumerate(users):
        await budget.record_spend(user, PREFILL, projects[i % len(projects)])


def hot_path_ops(
    budget: Any, users: list[str], projects: list[str | None]
) -> dict[str, Op]:
    """The timed calls (the ``SEQUENTIAL`` ones and ``check+record``); call
    ``i`` goes to user ``i`` and project ``i``, round robin. Public API only,
    so any version of spendgate runs them (``bench.versus``)."""
    nu, np_ = len(users), len(projects)

    async def check(i: int) -> object:
        return await budget.check_availability(
            users[i % nu], projects[i % np_], CHECK_COST
        )

    async def record(i: int) -> object:
        return await budget.record_spend(users[i % nu], RECORD_COST, projects[i % np_])

    async def reserve_settle(i: int) -> object:
        lease = await budget.reserve(users[i % nu], CHECK_COST, projects[i % np_])
        return await budget.settle(lease, RECORD_COST)

    async def pair(i: int) -> object:
        user, project = users[i % nu], projects[i % np_]
        await budget.check_availability(user, project, CHECK_COST)
        return await budget.record_spend(user, RECORD_COST, project)

    return {
        "check_availability": check,
        "record_spend": record,
        "reserve+settle": reserve_settle,
        "check+record": pair,
    }


@dataclass
class Subject:
    """One timed thing: a name, which side it is on, and its operation."""

    name: str
    side: str
    op: Op | None = None
    #: for the peer: the worker's op name
    remote: str | None = None


async def run(options: Options) -> dict[str, Any]:
    """Run the whole benchmark and write ``bench.json``, ``bench.md`` and the chart.

    :return: the results, as written to the JSON file
    """
    from loguru import logger

    from spendgate import BudgetManager

    log = options.log
    started = time.time()
    # Other work on the machine moves every number: say how busy it was.
    load_at_start = loadavg()
    run_id = f"{os.getpid():x}{uuid.uuid4().hex[:6]}"
    prefix = f"sgbench{run_id}"
    users, projects = callers(options.users, options.projects)
    logger.disable("spendgate")  # the run's own progress lines are enough

    budget = BudgetManager(bench_config(options.redis_url, prefix))
    await budget.open()
    client = budget.redis
    peer = None
    #: a second deployment for ``deduct (plan)``, its users on a plan
    planned: BudgetManager | None = None
    #: a third for the calls with teams and per-model caps on
    featured: BudgetManager | None = None
    try:
        log(
            f"bench: pre-filling {len(users)} users to {PREFILL}/{USER_LIMIT} "
            f"(prefix {prefix})"
        )
        await prefill(budget, users, projects)

        async def sg_ping(i: int) -> object:
            return await client.execute_command("PING")

        # A reference, not the floor: PING through spendgate's own automatic
        # pipeline, i.e. what concurrent round trips cost once they share
        # writes, as spendgate's concurrent calls do.
        scripts = budget._store.scripts
        pipeline = scripts._pipeline if scripts is not None else None

        async def sg_ping_pipelined(i: int) -> object:
            assert pipeline is not None
            return await pipeline.execute("PING")

        ops = hot_path_ops(budget, users, projects)
        latency_subjects = [Subject("ping", "spendgate", sg_ping)] + [
            Subject(name, "spendgate", ops[name]) for name in SEQUENTIAL
        ]
        if deduct_workload.supported(budget):
            log("bench: publishing the deduct price book, funding the users")
            await deduct_workload.prepare(budget, users)
            latency_subjects.append(
                Subject(
                    "deduct",
                    "spendgate",
                    deduct_workload.deduct_op(budget, users, projects),
                )
            )
            if deduct_workload.plans_supported(budget):
                log("bench: a deployment with a plan, its users on it")
                planned = BudgetManager(bench_config(options.redis_url, prefix + "p"))
                await planned.open()
                await deduct_workload.prepare_plan(planned, users)
                latency_subjects.append(
                    Subject(
                        "deduct (plan)",
                        "spendgate",
                        deduct_workload.deduct_op(planned, users, projects),
                    )
                )
        if featured_workload.supported(budget):
            log("bench: a deployment with teams and a per-model cap")
            featured = BudgetManager(
                bench_config(
                    options.redis_url,
                    prefix + "f",
                    **featured_workload.config_changes(),
                )
            )
            await featured.open()
            await featured_workload.prepare(featured, users, projects)
            latency_subjects += [
                Subject(name, "spendgate", op)
                for name, op in featured_workload.featured_ops(
                    featured, users, projects
                ).items()
            ]
        throughput_subjects = [
            Subject("ping", "spendgate", sg_ping),
            Subject("check+record", "spendgate", ops["check+record"]),
        ]
        if pipeline is not None:
            throughput_subjects.append(
                Subject("ping_pipelined", "spendgate", sg_ping_pipelined)
            )
        if options.peer:
            peer = await _start_peer(options, users, projects)
            latency_subjects += [
                Subject("ping", "peer", remote="ping"),
                Subject("check_availability", "peer", remote="check"),
                Subject("record_spend", "peer", remote="record"),
            ]
            throughput_subjects += [
                Subject("ping", "peer", remote="ping"),
                Subject("check+record", "peer", remote="pair"),
            ]

        sides = {
            side: [s for s in latency_subjects if s.side == side]
            for side in dict.fromkeys(s.side for s in latency_subjects)
        }

        async def time_latency(side: str, n: int, start: int) -> dict[str, list[int]]:
            # One side's subjects (each side runs in its own process)
            # interleaved call by call: a subject timed alone in a long block
            # keeps its own path warm (PING most of all), and slow drifts of
            # the host would land on the blocks unevenly.
            subjects = sides[side]
            if side == "spendgate":
                ops = {s.name: s.op for s in subjects if s.op is not None}
                return await interleaved_samples(ops, n, start)
            assert peer is not None
            reply = await peer.call(
                "latency", ops=[s.remote for s in subjects], n=n, start=start
            )
            return {s.name: reply["samples"][s.remote] for s in subjects}

        async def time_throughput(
            s: Subject, c: int, d: float, start: int
        ) -> tuple[int, float]:
            if s.op is not None:
                return await throughput(s.op, c, d, start)
            assert peer is not None
            reply = await peer.call(
                "throughput", op=s.remote, concurrency=c, duration=d, start=start
            )
            return int(reply["done"]), float(reply["elapsed"])

        log("bench: warming up (connections, scripts, caches)")
        for side in sides:
            await time_latency(side, min(300, options.samples), 0)
        for c in options.concurrency:
            for s in throughput_subjects:
                await time_throughput(s, c, min(0.1, options.duration_s), 0)

        samples: dict[tuple[str, str], list[int]] = {
            (s.side, s.name): [] for s in latency_subjects
        }
        tput: dict[tuple[str, str, int], list[tuple[int, float]]] = {}
        cursor = 0
        for r in range(options.rounds):
            log(f"bench: round {r + 1}/{options.rounds}")
            for side in _rotated(list(sides), r):
                timed = await time_latency(side, options.samples, cursor)
                for name, values in timed.items():
                    samples[(side, name)] += values
                cursor += options.samples
            for c in options.concurrency:
                for s in _rotated(throughput_subjects, r):
                    done, elapsed = await time_throughput(
                        s, c, options.duration_s, cursor
                    )
                    tput.setdefault((s.side, s.name, c), []).append((done, elapsed))
                    cursor += done

        log("bench: overshoot test")
        overshoot = await footprint.overshoot(options, prefix, run_id, peer)
        log("bench: Redis memory per active user-day")
        memory = await footprint.memory_per_user_day(options, prefix)
        log("bench: import times")
        imports = footprint.import_times(options)
        info = await client.info("everything")
    finally:
        if peer is not None:
            try:
                await peer.call("cleanup")
            finally:
                await peer.stop()
        deleted = await delete_prefix(client, prefix)
        if planned is not None:
            deleted += await delete_prefix(client, prefix + "p")
            await planned.aclose()
        if featured is not None:
            deleted += await delete_prefix(client, prefix + "f")
            await featured.aclose()
        await budget.aclose()
        logger.enable("spendgate")
    log(f"bench: cleaned up {deleted} keys")
    section = None
    if options.cluster:
        from bench import cluster

        section = await cluster.section(options)

    results = outputs.assemble(
        options, started, samples, tput, overshoot, memory, imports, info
    )
    results["cluster"] = section
    results["machine"]["loadavg_start"] = load_at_start
    results["machine"]["loadavg_end"] = loadavg()
    outputs.write(options, results, samples)
    return results


async def _start_peer(
    options: Options, users: list[str], projects: list[str | None]
) -> Any:
    from bench.peer import PeerWorker, ensure_peer_venv

    python = await asyncio.to_thread(ensure_peer_venv, log=options.log)
    peer = PeerWorker(python)
    await peer.start()
    options.log(f"bench: pre-filling the peer's {len(users)} users")
    await peer.call(
        "setup",
        redis_url=options.redis_url,
        user_limit=USER_LIMIT,
        users=users,
        projects=[p for p in projects if p is not None],
        check_cost=CHECK_COST,
        record_cost=RECORD_COST,
        prefill=PREFILL,
    )
    return peer


def _rotated(items: list[T], r: int) -> list[T]:
    k = r % len(items)
    return items[k:] + items[:k]


def main_sync(options: Options) -> dict[str, Any]:
    return asyncio.run(run(options))
