"""One benchmark run: floor, spendgate and the peer, interleaved in rounds.

Every round first times latency, each side (spendgate, the peer) in turn
with its subjects (its PING floor and its calls) interleaved call by call,
then throughput from 1, 16, 64 and 256 concurrent tasks, each subject in
turn; the order rotates from round to round, so machine noise lands on all
subjects alike. After the rounds: the overshoot test, import times, Redis
memory per active user-day, machine facts and Redis ``INFO``; then the
results are written and every key the run created is deleted.
"""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from bench import deduct_workload
from bench.grant_memory import grant_memory
from bench.measure import Op, interleaved_samples, summarize_ns, throughput

T = TypeVar("T")

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"
RESULTS_DIR = Path(__file__).resolve().parent / "results"

#: what each check asks for and each record charges: plain floats, as a
#: coreason-budget caller passes them (spendgate reads them exactly)
CHECK_COST = 0.01
RECORD_COST = 0.002
#: the per-user daily cap, and how full each user's budget is at the start
USER_LIMIT = 1000
PREFILL = 500


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


def bench_config(redis_url: str, prefix: str) -> Any:
    """The ``BudgetConfig`` of the workload: a per-user daily cap of
    ``USER_LIMIT``, project and global caps far above what a run spends."""
    from spendgate import BudgetConfig

    return BudgetConfig(
        redis_url=redis_url,
        key_prefix=prefix,
        daily_user_limit=USER_LIMIT,
        daily_project_limit=10**9,
        daily_global_limit=10**9,
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
    load_at_start = _loadavg()
    run_id = f"{os.getpid():x}{uuid.uuid4().hex[:6]}"
    prefix = f"sgbench{run_id}"
    users, projects = callers(options.users, options.projects)
    logger.disable("spendgate")  # the run's own progress lines are enough

    budget = BudgetManager(bench_config(options.redis_url, prefix))
    await budget.open()
    client = budget.redis
    peer = None
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
        overshoot = await _overshoot(options, prefix, run_id, peer)
        log("bench: Redis memory per active user-day")
        memory = await _memory(options, prefix)
        log("bench: import times")
        imports = _import_times(options)
        info = await client.info("everything")
    finally:
        if peer is not None:
            try:
                await peer.call("cleanup")
            finally:
                await peer.stop()
        deleted = await delete_prefix(client, prefix)
        await budget.aclose()
        logger.enable("spendgate")
    log(f"bench: cleaned up {deleted} keys")

    results = _assemble(
        options, started, samples, tput, overshoot, memory, imports, info
    )
    results["machine"]["loadavg_start"] = load_at_start
    results["machine"]["loadavg_end"] = _loadavg()
    _write(options, results, samples)
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


async def _overshoot(
    options: Options, prefix: str, run_id: str, peer: Any
) -> dict[str, Any]:
    """``tasks`` concurrent check-then-charge of 1 against a daily limit of ``limit``.

    spendgate is run twice: with ``check_availability`` + ``record_spend``
    (a check is a read, so concurrent callers can all pass it: the same race
    as the peer's) and with leases (``reserve`` + ``settle``), where the hold
    is taken in the same atomic step as the check.
    """
    from spendgate import BudgetConfig, BudgetExceededError, BudgetManager

    tasks, limit = options.overshoot_tasks, options.overshoot_limit
    config = BudgetConfig(
        redis_url=options.redis_url,
        key_prefix=prefix,
        daily_user_limit=limit,
        daily_project_limit=None,
        daily_global_limit=None,
    )
    out: dict[str, Any] = {"tasks": tasks, "limit": limit, "cost": 1}
    async with BudgetManager(config) as budget:

        async def check_then_record(user: str) -> bool:
            try:
                await budget.check_availability(user, None, 1)
            except BudgetExceededError:
                return False
            await budget.record_spend(user, 1)
            return True

        async def lease(user: str) -> bool:
            try:
                held = await budget.reserve(user, 1)
            except BudgetExceededError:
                return False
            await budget.settle(held, 1)
            return True

        for name, fn in (
            ("spendgate_check_record", check_then_record),
            ("spendgate_lease", lease),
        ):
            user = f"overshoot-{name}-{run_id}"
            admitted = sum(await asyncio.gather(*(fn(user) for _ in range(tasks))))
            usage = await budget.get_usage(user)
            recorded = usage["user"].daily.spent
            out[name] = _overshoot_row(admitted, recorded, limit)
    if peer is not None:
        reply = await peer.call(
            "overshoot",
            user=f"overshoot-peer-{run_id}",
            tasks=tasks,
            limit=limit,
            cost=1,
        )
        out["peer_check_record"] = _overshoot_row(
            int(reply["admitted"]), Decimal(repr(float(reply["recorded"]))), limit
        )
    return out


def _overshoot_row(admitted: int, recorded: Decimal, limit: int) -> dict[str, Any]:
    return {
        "admitted": admitted,
        "recorded": str(recorded),
        "overshoot": str(max(Decimal(0), recorded - limit)),
    }


async def _memory(options: Options, prefix: str) -> dict[str, Any]:
    """``MEMORY USAGE`` of what active users leave in Redis over one day,
    and of grants and refund records (:mod:`bench.grant_memory`).

    Each simulated user (a 36-character UUID id, in a project) makes 20
    checks, 10 direct charges and 5 leases in the day. The user's own keys
    (its day and month counters; a held amount or balance if one is left)
    are the per-user-day cost; the per-fact idempotency records, the
    finished lease records and the ledger stream entries are reported on
    separate lines, per fact / lease / entry.
    """
    from spendgate import BudgetConfig, BudgetManager

    mem_prefix = prefix + "mem"
    config = BudgetConfig(
        redis_url=options.redis_url,
        key_prefix=mem_prefix,
        daily_user_limit=100,
        daily_project_limit=10_000,
        daily_global_limit=1_000_000,
    )
    users = [str(uuid.uuid4()) for _ in range(options.memory_users)]
    spends = leases = 0
    async with BudgetManager(config) as budget:
        client = budget.redis
        for n, user in enumerate(users):
            project = f"project-{n % 5}"
            for _ in range(20):
                await budget.check_availability(user, project, CHECK_COST)
            for _ in range(10):
                await budget.record_spend(
                    user, RECORD_COST, project, model="gpt-4o-mini"
                )
                spends += 1
            for _ in range(5):
                async with budget.lease(user, CHECK_COST, project) as held:
                    held.actual_cost = RECORD_COST
                leases += 1
        sizes: dict[str, int] = {}
        async for key in client.scan_iter(match=budget.keys.pattern(), count=1000):
            name = key.decode()
            sizes[name] = int(await client.memory_usage(name, samples=0) or 0)
        base = budget.keys.base
        per_user = []
        for user in users:
            per_user.append(sum(v for k, v in sizes.items() if k.endswith(":" + user)))
        idem = [v for k, v in sizes.items() if k.startswith(base + "i:")]
        charges = [v for k, v in sizes.items() if k.startswith(base + "c:")]
        holds = [v for k, v in sizes.items() if k.startswith(base + "h:")]
        ledger_bytes = sizes.get(budget.keys.ledger, 0)
        ledger_len = int(await client.xlen(budget.keys.ledger))
        user_keys = sorted(
            k[len(base) :].replace(users[0], "<user>")
            for k in sizes
            if k.endswith(":" + users[0])
        )
        shared = sum(
            v
            for k, v in sizes.items()
            if not any(k.endswith(":" + u) for u in users)
            and not k.startswith((base + "i:", base + "h:", base + "c:"))
            and k != budget.keys.ledger
        )
        grants = await grant_memory(budget, RECORD_COST)
        await delete_prefix(client, mem_prefix)
    return {
        "users": len(users),
        "user_id_length": len(users[0]),
        "day": "20 checks, 10 record_spend, 5 lease reserve+settle, one project",
        "per_user_day_bytes": sum(per_user) / len(per_user),
        "per_user_keys": user_keys,
        "per_fact_idempotency_bytes": sum(idem) / len(idem) if idem else 0,
        "idempotency_records": len(idem),
        "per_lease_record_bytes": sum(holds) / len(holds) if holds else 0,
        # (a charge's refund record, kept refund_window_seconds; these users
        # hold no balance, so it names no grant)
        "per_refund_record_bytes": sum(charges) / len(charges) if charges else 0,
        "refund_records": len(charges),
        **grants,
        "lease_records": len(holds),
        "per_ledger_entry_bytes": ledger_bytes / ledger_len if ledger_len else 0,
        "ledger_entries": ledger_len,
        "shared_keys_bytes": shared,
        # idempotency records are kept per record_spend (and add_credits); a
        # settle is made idempotent by its lease record instead
        "spends": spends,
        "leases": leases,
    }


def _import_times(options: Options) -> dict[str, Any]:
    from bench.peer import (
        DEFAULT_VENV,
        PEER_VERSION,
        import_seconds,
        installed_version,
        peer_import_seconds,
        venv_python,
    )

    out = {
        "spendgate": import_seconds(sys.executable, "spendgate", options.import_repeat)
    }
    python = venv_python(DEFAULT_VENV)
    if options.peer and installed_version(python) == PEER_VERSION:
        out["peer"] = peer_import_seconds(python, options.import_repeat)
    return out


async def delete_prefix(client: Any, prefix: str) -> int:
    """Delete every key of the deployment ``prefix`` (SCAN, 500 per DEL);
    return how many there were. Used by every bench that makes keys.

    Every key of a deployment starts with ``"<prefix>:"``: the pattern is
    built here, not by spendgate, so every version of spendgate is cleaned
    alike (``bench.versus`` runs older ones beside this checkout)."""
    escaped = "".join("\\" + c if c in "*?[]\\" else c for c in prefix)
    deleted = 0
    batch: list[bytes] = []
    async for key in client.scan_iter(match=escaped + ":*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += await client.delete(*batch)
            batch = []
    if batch:
        deleted += await client.delete(*batch)
    return deleted


# -- results -------------------------------------------------------------------


def _loadavg() -> list[str] | None:
    try:
        return Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    import redis

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "cpu_count": os.cpu_count(),
        "redis_py": redis.__version__,
    }
    try:
        import hiredis

        info["hiredis"] = getattr(hiredis, "__version__", "installed")
    except ImportError:
        info["hiredis"] = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["mem_total"] = line.split(":", 1)[1].strip()
                break
        info["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        pass
    try:
        root = Path(__file__).resolve().parents[1]
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
        )
        info["git_commit"] = commit.stdout.strip() or None
    except OSError:
        info["git_commit"] = None
    return info


def _assemble(
    options: Options,
    started: float,
    samples: dict[tuple[str, str], list[int]],
    tput: dict[tuple[str, str, int], list[tuple[int, float]]],
    overshoot: dict[str, Any],
    memory: dict[str, Any],
    imports: dict[str, Any],
    info: dict[str, Any],
) -> dict[str, Any]:
    from spendgate.config import redact_url

    latency: dict[str, dict[str, Any]] = {}
    for (side, name), values in samples.items():
        latency.setdefault(side, {})[name] = summarize_ns(values)
    floor = latency["spendgate"]["ping"]["p50"]
    for side in latency.values():
        for summary in side.values():
            summary["x_ping_p50"] = summary["p50"] / floor
    peer_floor = latency.get("peer", {}).get("ping", {}).get("p50")
    if peer_floor:
        for summary in latency["peer"].values():
            summary["x_own_ping_p50"] = summary["p50"] / peer_floor

    rows = []
    for c in options.concurrency:
        row: dict[str, Any] = {"concurrency": c}
        for side in ("spendgate", "peer"):
            for name, key in (
                ("ping", "ping_ops_s"),
                ("check+record", "pairs_s"),
                ("ping_pipelined", "ping_pipelined_ops_s"),
            ):
                runs = tput.get((side, name, c))
                if runs:
                    done = sum(d for d, _ in runs)
                    elapsed = sum(e for _, e in runs)
                    row[f"{side}_{key}"] = done / elapsed
                    row[f"{side}_{key}_rounds"] = [d / e for d, e in runs]
        ping = row["spendgate_ping_ops_s"]
        row["spendgate_x_ping"] = row["spendgate_pairs_s"] / ping
        if "spendgate_ping_pipelined_ops_s" in row:
            row["spendgate_x_ping_pipelined"] = (
                row["spendgate_pairs_s"] / row["spendgate_ping_pipelined_ops_s"]
            )
        if "peer_pairs_s" in row:
            row["peer_x_ping"] = row["peer_pairs_s"] / ping
            row["spendgate_x_peer"] = row["spendgate_pairs_s"] / row["peer_pairs_s"]
        rows.append(row)

    opts = {k: v for k, v in asdict(options).items() if k not in ("log",)}
    opts["out_dir"] = str(options.out_dir)
    opts["redis_url"] = redact_url(options.redis_url)
    results: dict[str, Any] = {
        "meta": {
            "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
            "duration_s": round(time.time() - started, 1),
            "command": options.command,
            "options": opts,
            "workload": {
                "users": options.users,
                "projects": options.projects,
                "check_cost": CHECK_COST,
                "record_cost": RECORD_COST,
                "user_limit": USER_LIMIT,
                "prefill": PREFILL,
            },
        },
        "machine": machine_info(),
        "latency_us": latency,
        "throughput": rows,
        "overshoot": overshoot,
        "import_time": imports,
        "memory": memory,
        "redis_info": info,
    }
    results["targets"] = _targets(results, options)
    return results


def _targets(results: dict[str, Any], options: Options) -> list[dict[str, Any]]:
    lat = results["latency_us"]["spendgate"]
    out: list[dict[str, Any]] = []

    def add(
        name: str, target: str, value: float | None, met: bool | None, shown: str
    ) -> None:
        out.append(
            {"name": name, "target": target, "value": value, "met": met, "shown": shown}
        )

    for op, limit in (
        ("check_availability", 1.5),
        ("record_spend", 1.5),
        ("reserve+settle", 3.0),
        ("deduct", 1.6),
    ):
        if op not in lat:
            continue
        x = lat[op]["x_ping_p50"]
        add(f"{op} p50", f"<= {limit}x PING p50", x, x <= limit, f"{x:.2f}x")
    row64 = next((r for r in results["throughput"] if r["concurrency"] == 64), None)
    if row64 is not None:
        x = row64["spendgate_x_ping"]
        add("64-task check+record", ">= 0.35x PING ops/s", x, x >= 0.35, f"{x:.2f}x")
        if "spendgate_x_peer" in row64:
            x = row64["spendgate_x_peer"]
            add(
                "64-task check+record vs peer", ">= 3x the peer", x, x >= 3, f"{x:.2f}x"
            )
    lease = results["overshoot"]["spendgate_lease"]
    over = Decimal(lease["overshoot"])
    add("overshoot with leases", "0", float(over), over == 0, f"{lease['overshoot']}")
    imp = results["import_time"]["spendgate"]
    ok = imp["median_s"] <= 0.3 and not imp["heavy_modules_imported"]
    heavy = (
        ", ".join(imp["heavy_modules_imported"]) or "none of litellm/fastapi/asyncpg"
    )
    add(
        "import spendgate",
        "<= 0.3 s, no heavy imports",
        imp["median_s"],
        ok,
        f"{imp['median_s']:.3f} s, {heavy}",
    )
    mem = results["memory"]["per_user_day_bytes"]
    add("Redis memory per active user-day", "<= 400 B", mem, mem <= 400, f"{mem:.0f} B")
    return out


def _write(
    options: Options, results: dict[str, Any], samples: dict[tuple[str, str], list[int]]
) -> None:
    import json

    from bench.report import render_chart, render_markdown

    out = options.out_dir
    out.mkdir(parents=True, exist_ok=True)
    results["latency_quantiles_us"] = {
        f"{side}:{name}": _quantiles(values) for (side, name), values in samples.items()
    }
    (out / "bench.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out / "bench.md").write_text(render_markdown(results))
    options.log(f"bench: wrote {out / 'bench.json'} and {out / 'bench.md'}")
    if options.chart:
        path = out / "latency.png"
        if render_chart(results, path):
            options.log(f"bench: wrote {path}")
        else:
            options.log(
                "bench: matplotlib is not installed; no chart (pip install '.[bench]')"
            )


def _quantiles(values: list[int]) -> list[list[float]]:
    """(percentile, µs) points of the distribution, dense in the tail, for the chart."""
    ordered = sorted(values)
    n = len(ordered)
    points = (
        [p / 2 for p in range(0, 200)]
        + [99 + p / 100 for p in range(0, 100)]
        + [99.9 + p / 1000 for p in range(0, 100)]
    )
    out = []
    for pct in points:
        idx = min(n - 1, int(pct / 100 * n))
        out.append([round(pct, 3), ordered[idx] / 1000])
    out.append([100.0, ordered[-1] / 1000])
    return out


def main_sync(options: Options) -> dict[str, Any]:
    return asyncio.run(run(options))
