"""Four app processes at one cap on a Redis Cluster: exact at the user's, the
project's and the global cap.

How: the session's 3-master test cluster (tests/redis_cluster.py), and four
OS processes (tests/cap_worker.py, each its own interpreter and
``BudgetManager(redis_cluster=True)`` through a master that does not own
spendgate's slot). At one wall-clock instant each fires 100 reserves at once
(400 in all) at a cap that fits exactly N of them: a user's (every reserve
the one user's), a project's (40 users of the project, each far under their
own cap) or the global one (80 users of 4 projects, each user and project far
under theirs). Exactly N are admitted, the others refused by that cap, and
Redis holds exactly N x the amount in the scope. Then each process settles
half of its leases and releases the rest, all at once: nothing is held, the
scope has spent exactly the settled ones, the ledger has one entry each. A
second burst of 400 admits exactly what the released leases gave back (no
budget stranded), and released again leaves the counters as they were.

Today's keyspace puts every key in the one ``{sg}`` slot: one master decides
every call, atomically, so the bound on overshoot is 0 in every scope (the
README's "Redis Cluster" states it from this test).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import pytest

from redis_cluster import LocalCluster
from spendgate import BudgetConfig, BudgetManager

pytestmark = [pytest.mark.slow, pytest.mark.redis]

PROCESSES, CALLS = 4, 100  # reserves per process
AMOUNT = Decimal("0.07")
NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)  # every process's clock
DAY = NOW.strftime("%Y%m%d")  # its day, as keys name it
WORKER = Path(__file__).with_name("cap_worker.py")
SRC = Path(__file__).resolve().parent.parent / "src"
#: how long a process may take to start, or to answer a command
ANSWER_SECONDS = 30
#: the processes are told to start a burst this long after they are told
LEAD_SECONDS = 0.3


@dataclass(frozen=True)
class Scenario:
    scope: str  # the capped scope
    scope_id: str  # its id ("" for the global scope)
    admits: int  # N: the cap fits exactly this many reserves
    calls: list[tuple[str, str | None]]  # the 400 reserves: user, project
    defaults: dict[str, Any]  # the default caps of every process


def _scenario(scope: str) -> Scenario:
    total = PROCESSES * CALLS
    # far from binding: a user makes at most 10 of the 400, a project 100
    under = {"daily_user_limit": str(AMOUNT * 100)}
    if scope == "user":
        return Scenario("user", "ada", 37, [("ada", None)] * total, {})
    if scope == "project":
        calls = [(f"member-{n % 40}", "acme") for n in range(total)]
        return Scenario("project", "acme", 151, calls, under)
    calls = [(f"user-{n % 80}", f"project-{n % 80 % 4}") for n in range(total)]
    under["daily_project_limit"] = str(AMOUNT * 1000)
    return Scenario("global", "", 263, calls, under)


def _settings(cluster: LocalCluster, prefix: str, spool: Path) -> dict[str, Any]:
    return {
        "redis_url": cluster.url(cluster.not_owning()),
        "redis_cluster": True,
        "key_prefix": prefix,
        "daily_user_limit": None,
        "daily_project_limit": None,
        "daily_global_limit": None,
        "spool_path": str(spool),
        # (four processes connect to every node at once: on a busy machine
        # that has taken longer than the hot path's 0.25 s default)
        "redis_connect_timeout_seconds": 5,
    }


class Workers:
    """The app processes of one test; every one is killed at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.processes: list[subprocess.Popen[str]] = []
        self.logs: list[TextIO] = []

    def start(self, settings: dict[str, Any]) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDGATE_")}
        # this checkout's code, whatever the venv's editable install points at
        env["PYTHONPATH"] = os.pathsep.join(
            [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])]
        )
        for n in range(PROCESSES):
            own = {**settings, "spool_path": f"{settings['spool_path']}-{n}"}
            log = (self.tmp_path / f"worker-{n}.log").open("w")
            self.logs.append(log)
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, str(WORKER), json.dumps(own), NOW.isoformat()],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    text=True,
                    env=env,
                )
            )
        for answer in self.read_all():
            assert "ready" in answer

    def send_all(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for process, command in zip(self.processes, commands, strict=True):
            assert process.stdin is not None
            process.stdin.write(json.dumps(command) + "\n")
            process.stdin.flush()
        return self.read_all()

    def read_all(self) -> list[dict[str, Any]]:
        """One answer line of each process, in order (the test fails, with
        the process's stderr, when one exits or takes too long)."""
        answers = []
        deadline = time.monotonic() + ANSWER_SECONDS
        for n, process in enumerate(self.processes):
            assert process.stdout is not None
            line = _read_line(process, deadline)
            if not line:
                self.logs[n].flush()
                log = (self.tmp_path / f"worker-{n}.log").read_text()
                pytest.fail(f"worker {n} answered nothing:\n{log[-3000:]}")
            answers.append(json.loads(line))
        return answers

    def close(self) -> list[int | None]:
        """Tell every process to exit; their exit codes."""
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write('{"op": "exit"}\n')
            process.stdin.flush()
        codes = []
        for process in self.processes:
            try:
                codes.append(process.wait(timeout=ANSWER_SECONDS))
            except subprocess.TimeoutExpired:
                codes.append(None)
        return codes

    def kill(self) -> None:
        """Kill whatever still runs (the test failed, or ``close`` did not
        end it), and let go of the pipes and logs."""
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()
        for log in self.logs:
            log.close()


def _read_line(process: subprocess.Popen[str], deadline: float) -> str:
    """A line of the process's stdout, or ``""`` once it exited or the
    deadline passed (then it is killed, which ends the read)."""
    stdout = process.stdout
    assert stdout is not None
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(stdout.readline()))
    reader.start()
    reader.join(max(0.0, deadline - time.monotonic()))
    if reader.is_alive():
        process.kill()
        reader.join()
    return got[0] if got else ""


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    made = Workers(tmp_path)
    yield made
    made.kill()


@pytest.fixture
async def verifier(
    redis_cluster: LocalCluster, tmp_path: Path
) -> AsyncIterator[BudgetManager]:
    """A manager of the test's own, on a fresh prefix, that sets the caps and
    reads what Redis holds; the prefix's keys are deleted after."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    settings = _settings(redis_cluster, prefix, tmp_path / "spool-verifier")
    budget = BudgetManager(BudgetConfig(**settings), clock=lambda: NOW)
    async with budget:
        yield budget
        keys = [k async for k in budget.redis.scan_iter(match=f"{prefix}:*")]
        for key in keys:
            await budget.redis.delete(key)


def _split(calls: list[Any]) -> list[list[Any]]:
    """Each process's share: every fourth call, so that a user's (and a
    project's) reserves come from every process."""
    return [calls[n::PROCESSES] for n in range(PROCESSES)]


def _burst(workers: Workers, scenario: Scenario) -> list[dict[str, Any]]:
    """400 reserves, 100 from each process, all started at one instant."""
    at = time.time() + LEAD_SECONDS
    return workers.send_all(
        [
            {"op": "reserve", "at": at, "amount": str(AMOUNT), "calls": share}
            for share in _split(scenario.calls)
        ]
    )


def _end(workers: Workers, settle: list[list[str]]) -> list[dict[str, Any]]:
    """Every process settles the leases listed for it and releases its others,
    all at one instant."""
    at = time.time() + LEAD_SECONDS
    return workers.send_all([{"op": "end", "at": at, "settle": s} for s in settle])


def _check_burst(
    answers: list[dict[str, Any]], scenario: Scenario, admits: int
) -> None:
    # (when each process's burst began and ended, ms after the first began:
    # shown when the test fails, or with -s)
    first = min(a["began"] for a in answers)
    print(
        f"{scenario.scope} burst:",
        [
            (
                round((a["began"] - first) * 1000, 1),
                round((a["ended"] - first) * 1000, 1),
            )
            for a in answers
        ],
    )
    assert [a["errors"] for a in answers] == [[]] * PROCESSES
    assert sum(len(a["admitted"]) for a in answers) == admits
    refused: dict[str, int] = {}
    for answer in answers:
        for why, count in answer["refused"].items():
            refused[why] = refused.get(why, 0) + count
    # every refusal is the capped scope's daily cap, no other
    assert refused == {f"{scenario.scope}/daily": PROCESSES * CALLS - admits}


async def _stored(budget: BudgetManager, key: str) -> Decimal:
    """A counter as Redis holds it (micro-units; absent is 0), in money."""
    raw = await budget.redis.get(key)
    return Decimal(int(raw or 0)) / 1_000_000


async def _counters(
    budget: BudgetManager, scenario: Scenario
) -> tuple[Decimal, Decimal, Decimal]:
    """What the capped scope holds and has spent today, as Redis has them
    (and get_usage agrees), and what get_usage says remains."""
    keys = budget.keys
    held = await _stored(budget, keys.held(scenario.scope, scenario.scope_id))
    spent = await _stored(budget, keys.day(DAY, scenario.scope, scenario.scope_id))
    user, project = scenario.calls[0]
    usage = (await budget.get_usage(user, project))[scenario.scope]
    assert (usage.daily.held, usage.daily.spent) == (held, spent)
    assert usage.daily.remaining is not None
    return held, spent, usage.daily.remaining


async def _held_by(budget: BudgetManager, scenario: Scenario) -> list[Decimal]:
    """What the users and the projects of the reserves hold, each summed,
    and the global scope, as Redis has them."""
    users = {user for user, _ in scenario.calls}
    projects = {project for _, project in scenario.calls if project is not None}
    held = budget.keys.held
    return [
        sum([await _stored(budget, held(scope, i)) for i in ids], Decimal(0))
        for scope, ids in (("user", users), ("project", projects), ("global", {""}))
    ]


@pytest.mark.parametrize("scope", ["user", "project", "global"])
async def test_four_processes_at_one_cap_admit_exactly_what_it_fits(
    scope: str,
    redis_cluster: LocalCluster,
    verifier: BudgetManager,
    workers: Workers,
    tmp_path: Path,
) -> None:
    scenario = _scenario(scope)
    n = scenario.admits
    cap = AMOUNT * n
    if scope == "global":
        await verifier.set_limits("global", daily=cap)
    else:
        await verifier.set_limits(scope, scenario.scope_id, daily=cap)
    settings = _settings(redis_cluster, verifier.config.key_prefix, tmp_path / "sp")
    await asyncio.to_thread(workers.start, {**settings, **scenario.defaults})

    # 400 reserves at once from 4 processes: exactly N admitted
    answers = await asyncio.to_thread(_burst, workers, scenario)
    _check_burst(answers, scenario, n)
    assert await _counters(verifier, scenario) == (cap, 0, 0)
    # (every reserve holds in each of its scopes: the user scenario's have no
    # project)
    in_projects = 0 if scope == "user" else cap
    assert await _held_by(verifier, scenario) == [cap, in_projects, cap]

    # each process settles half of its leases and releases the others, at once
    settle = [a["admitted"][: (len(a["admitted"]) + 1) // 2] for a in answers]
    settled = sum(len(s) for s in settle)
    ended = await asyncio.to_thread(_end, workers, settle)
    assert [e["errors"] for e in ended] == [[]] * PROCESSES
    assert sum(e["settled"] for e in ended) == settled
    assert sum(e["released"] for e in ended) == n - settled
    spent = AMOUNT * settled
    assert await _counters(verifier, scenario) == (0, spent, cap - spent)
    assert await _held_by(verifier, scenario) == [0, 0, 0]
    global_spent = verifier.keys.day(DAY, "global", "")
    assert await _stored(verifier, global_spent) == spent
    assert await verifier.redis.zcard(verifier.keys.holds) == 0
    assert await verifier.redis.xlen(verifier.keys.ledger) == settled

    # what the released leases gave back is admitted again, exactly
    again = await asyncio.to_thread(_burst, workers, scenario)
    _check_burst(again, scenario, n - settled)
    assert await _counters(verifier, scenario) == (cap - spent, spent, 0)
    assert await _held_by(verifier, scenario) == [
        cap - spent,
        in_projects and cap - spent,
        cap - spent,
    ]
    ended = await asyncio.to_thread(_end, workers, [[]] * PROCESSES)
    assert [e["errors"] for e in ended] == [[]] * PROCESSES
    assert sum(e["released"] for e in ended) == n - settled
    assert await _counters(verifier, scenario) == (0, spent, cap - spent)
    assert await _held_by(verifier, scenario) == [0, 0, 0]
    assert await _stored(verifier, global_spent) == spent
    assert await verifier.redis.xlen(verifier.keys.ledger) == settled

    # every process exits cleanly, said nothing on stderr and spooled nothing
    assert await asyncio.to_thread(workers.close) == [0] * PROCESSES
    assert [log.read_text() for log in sorted(tmp_path.glob("worker-*.log"))] == [
        ""
    ] * PROCESSES
    assert not list(tmp_path.glob("sp-*/**/seg-*"))
