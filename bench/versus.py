"""Two versions of spendgate, one measurement, in alternating processes.

``python -m bench.versus REV [--rounds N] [--calls N] [--redis-url URL]``

Checks ``REV`` out into a temporary git worktree, then runs ``--rounds``
rounds; each round starts one fresh process per version (``REV``'s sources
first on ``PYTHONPATH``, then this checkout's), and each process times PING,
``check_availability``, ``record_spend``, ``reserve`` + ``settle`` and
``deduct`` and, for a version with teams, ``record_spend`` and ``deduct``
with ``team_id=`` (:mod:`bench.team_workload`) sequentially on the bench's
workload, interleaved call by call as ``make bench`` does, and reports
every p50 as a multiple of its own PING p50. A shared host that slows down
for minutes at a time moves a single ``make bench`` run by ±0.1x; here the
drift lands on both versions alike, and the table gives each one's median
and range.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from bench import deduct_workload, team_workload
from bench.measure import interleaved_samples
from bench.runner import (
    DEFAULT_REDIS_URL,
    SEQUENTIAL,
    bench_config,
    callers,
    delete_prefix,
    hot_path_ops,
    prefill,
)

ROOT = Path(__file__).resolve().parents[1]


async def measure(redis_url: str, calls: int, users: int = 1000) -> dict[str, float]:
    """p50 of each of the bench's sequential calls over ``calls`` calls,
    interleaved call by call with PING as ``make bench`` times them (after
    100 calls each to warm up), as a multiple of the PING p50 (``ping_us``:
    the PING p50 itself).

    The bench's own workload (``bench.runner``), through the public API
    only, so any version of spendgate can run it.
    """
    from loguru import logger

    from spendgate import BudgetManager

    logger.disable("spendgate")
    prefix = f"sgversus{uuid.uuid4().hex[:8]}"
    budget = BudgetManager(bench_config(redis_url, prefix))
    await budget.open()
    client = budget.redis
    try:
        ids, projects = callers(users, 10)
        await prefill(budget, ids, projects)

        async def ping(i: int) -> object:
            return await client.execute_command("PING")

        timed = hot_path_ops(budget, ids, projects)
        ops = {"ping": ping, **{name: timed[name] for name in SEQUENTIAL}}
        if deduct_workload.supported(budget):
            await deduct_workload.prepare(budget, ids)
            ops["deduct"] = deduct_workload.deduct_op(budget, ids, projects)
            if team_workload.supported(budget):
                await team_workload.prepare(budget, ids)
                ops.update(team_workload.team_ops(budget, ids, projects))
        await interleaved_samples(ops, 100)
        samples = await interleaved_samples(ops, calls, start=100)
        p50 = {name: statistics.median(v) / 1000 for name, v in samples.items()}
        out = {name: p50[name] / p50["ping"] for name in ops if name != "ping"}
        out["ping_us"] = p50["ping"]
        return out
    finally:
        await delete_prefix(client, prefix)
        await budget.aclose()


def summarize(runs: dict[str, list[dict[str, float]]]) -> str:
    """A markdown table: per subject, each version's median and range."""
    names = list(runs)
    lines = [
        "| | " + " | ".join(f"{n}: median (range)" for n in names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    # (deduct and the team charges only when every version measured has them;
    # a subject only one version has is shown alone)
    subjects = ("ping_us", *SEQUENTIAL, "deduct", "team_record_spend", "team_deduct")
    for subject in subjects:
        if not any(subject in run for runs_of in runs.values() for run in runs_of):
            continue
        cells = []
        for name in names:
            values = [run[subject] for run in runs[name] if subject in run]
            if not values:
                cells.append("—")
                continue
            unit = " µs" if subject == "ping_us" else "×"
            cells.append(
                f"{statistics.median(values):.2f}{unit} "
                f"({min(values):.2f}–{max(values):.2f})"
            )
        label = "PING p50" if subject == "ping_us" else f"`{subject}`"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _child(src: Path | None, redis_url: str, calls: int) -> dict[str, float]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            [str(src), *filter(None, [env.get("PYTHONPATH")])]
        )
    out = subprocess.run(
        [sys.executable, "-m", "bench.versus", "--child", "--calls", str(calls)]
        + ["--redis-url", redis_url],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=env,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def compare(rev: str, rounds: int, calls: int, redis_url: str) -> str:
    """Run the rounds against ``rev`` and this checkout; return the table."""
    scratch = Path(tempfile.mkdtemp(prefix="spendgate-versus-"))
    tree = scratch / "tree"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev],
        check=True,
        capture_output=True,
    )
    runs: dict[str, list[dict[str, float]]] = {rev: [], "this checkout": []}
    try:
        for _ in range(rounds):
            runs[rev].append(_child(tree / "src", redis_url, calls))
            runs["this checkout"].append(_child(None, redis_url, calls))
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(scratch, ignore_errors=True)
    return summarize(runs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.versus", description=__doc__)
    parser.add_argument("rev", nargs="?", help="the version to compare with")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(asyncio.run(measure(args.redis_url, args.calls))))
        return
    if not args.rev:
        parser.error("give the version to compare with (a commit, tag or branch)")
    print(compare(args.rev, args.rounds, args.calls, args.redis_url))


if __name__ == "__main__":
    main()
