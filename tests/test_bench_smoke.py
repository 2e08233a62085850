"""The benchmark code still runs: a tiny ``bench`` run and ``bench.quick``.

Runs the whole bench pipeline (interleaved rounds, throughput, overshoot,
memory, import time, the Redis Cluster section on servers it starts and
stops itself, JSON + markdown + chart) with a few samples against the real
Redis, without the peer (installing it takes a network and a minute), into
a temporary directory; then the short version, ``python -m bench.quick``
(once ``spendgate bench``), called in process (``python -m bench.cluster``
alone: test_bench_cluster.py). Asserts that the outputs are complete, the lease
overshoot is zero and the cluster section's split is what the keyspace
makes it (one bucket: every key on one master; 64 buckets: each master its
users'); no timing is asserted, speed lives in ``make bench``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from conftest import REDIS_URL, real_redis_available, service_missing
from test_bench_cluster import assert_cluster_section, require_cluster_binaries

pytestmark = [pytest.mark.redis, pytest.mark.slow]

# bench/ is a top-level package of the checkout, not of the installed wheel.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


@pytest.fixture
def redis_url() -> str:
    reason = real_redis_available()
    if reason:
        service_missing("Redis", reason)
    return REDIS_URL


async def test_a_tiny_bench_run_writes_every_result(
    redis_url: str, tmp_path: Path
) -> None:
    from bench.runner import Options, run

    require_cluster_binaries()  # the cluster section runs too

    lines: list[str] = []
    options = Options(
        redis_url=redis_url,
        rounds=2,
        samples=20,
        concurrency=(1, 8),
        duration_s=0.05,
        users=6,
        projects=2,
        peer=False,
        overshoot_tasks=40,
        overshoot_limit=10,
        import_repeat=1,
        memory_users=2,
        out_dir=tmp_path,
        log=lines.append,
    )
    results = await run(options)

    written = json.loads((tmp_path / "bench.json").read_text())
    assert written["targets"] == json.loads(json.dumps(results["targets"], default=str))
    for key in ("machine", "redis_info", "latency_us", "throughput", "memory"):
        assert written[key], key
    latency = written["latency_us"]["spendgate"]
    assert set(latency) == {
        "ping",
        "check_availability",
        "record_spend",
        "reserve+settle",
        "deduct",
        "deduct (plan)",  # users on a plan, a deployment of their own
        # teams and a per-model cap on, a deployment of their own
        "check_availability (model cap)",
        "team record_spend (model cap)",
    }
    assert latency["record_spend"]["n"] == 40
    assert latency["deduct"]["n"] == 40
    assert latency["deduct (plan)"]["n"] == 40
    assert latency["team record_spend (model cap)"]["n"] == 40
    assert [row["concurrency"] for row in written["throughput"]] == [1, 8]
    lease = written["overshoot"]["spendgate_lease"]
    assert (lease["admitted"], lease["recorded"], lease["overshoot"]) == (10, "10", "0")
    imported = written["import_time"]["spendgate"]
    assert imported["heavy_modules_imported"] == []
    memory = written["memory"]
    assert memory["per_user_keys"] and memory["per_user_day_bytes"] > 0
    assert memory["idempotency_records"] == memory["spends"]
    assert memory["lease_records"] == memory["leases"]
    names = {t["name"] for t in written["targets"]}
    assert "overshoot with leases" in names and "import spendgate" in names
    assert "deduct p50" in names
    assert "team record_spend (model cap) p50" in names
    assert_cluster_section(written["cluster"], users=6, concurrency=[1, 8])

    table = (tmp_path / "bench.md").read_text()
    assert "### Sequential latency" in table and "### Targets" in table
    assert "#### Throughput on 1 and 3 masters" in table
    assert "one master held 100% of the keys and took 100% of the decisions" in table
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "latency.png").read_bytes().startswith(b"\x89PNG")
    assert any("cleaned up" in line for line in lines)


def test_the_quick_bench(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    from bench.quick import main

    from spendgate.cli import EXIT_OK

    assert main(["--samples", "8", "--redis-url", redis_url]) == EXIT_OK
    out = capsys.readouterr().out
    for name in (
        "PING (floor)",
        "check_availability",
        "record_spend",
        "reserve+settle",
    ):
        assert name in out


def test_the_quick_bench_with_cap_actions(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.quick import main

    from spendgate.cli import EXIT_OK

    code = main(["--samples", "8", "--redis-url", redis_url, "--cap-actions"])
    assert code == EXIT_OK
    assert "with cap actions" in capsys.readouterr().out


def test_the_cap_actions_bench(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench.cap_actions import VARIANTS, main

    main(["--samples", "8", "--redis-url", redis_url])
    out = capsys.readouterr().out
    for variant in VARIANTS:
        assert f"record_spend, {variant}" in out


def test_the_quick_bench_says_when_redis_is_down(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bench.quick import main

    from spendgate.cli import EXIT_UNAVAILABLE

    code = main(["--samples", "8", "--redis-url", "redis://127.0.0.1:1/0"])
    assert code == EXIT_UNAVAILABLE
    assert "did not answer" in capsys.readouterr().out


@pytest.mark.parametrize("samples", ["0", "-3", "x"])
def test_the_quick_bench_refuses_no_samples(
    capsys: pytest.CaptureFixture[str], samples: str
) -> None:
    from bench.quick import main

    from spendgate.cli import EXIT_USAGE

    # Refused before connecting: this Redis would answer 4 ("unavailable").
    with pytest.raises(SystemExit) as exit_info:
        main(["--samples", samples, "--redis-url", "redis://127.0.0.1:1/0"])
    assert exit_info.value.code == EXIT_USAGE
    assert "at least 1" in capsys.readouterr().err


async def _keys_left(redis_url: str, pattern: str) -> list[bytes]:
    """The keys matching ``pattern`` still in the store (a bench leaves none)."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        return [k async for k in client.scan_iter(match=pattern, count=1000)]
    finally:
        await client.aclose()


async def test_floor_breakdown_runs_and_cleans_up(redis_url: str) -> None:
    from bench.floor_breakdown import breakdown

    medians = await breakdown(redis_url, rounds=5, block=2)
    assert set(medians) == {
        "PING",
        "check_availability",
        "record_spend",
        "reserve+settle",
        "record_spend, trivial script",
        "EVALSHA, empty script",
        "EVALSHA, trivial, record's args",
    }
    assert all(value > 0 for value in medians.values())
    assert await _keys_left(redis_url, "sgfloor*") == []


async def test_deduct_breakdown_runs_and_cleans_up(redis_url: str) -> None:
    from bench.deduct_breakdown import breakdown

    medians = await breakdown(redis_url, rounds=5, server_time=True)
    assert {"server deduct", "server deduct xadd", "server record_spend"} <= set(
        medians
    )
    medians = {k: v for k, v in medians.items() if not k.startswith("server ")}
    assert set(medians) == {
        "PING",
        "check_availability",
        "record_spend",
        "deduct",
        "EVALSHA deduct, raw",
        "EVALSHA deduct, raw, no metadata",
        "EVALSHA trivial, deduct's args",
        "EVALSHA, the least a deduct does",
        "EVALSHA, empty script",
    }
    assert all(value > 0 for value in medians.values())
    assert await _keys_left(redis_url, "sgdeductbd*") == []


async def test_featured_breakdown_runs_its_least_scripts_and_cleans_up(
    redis_url: str,
) -> None:
    from bench.featured_breakdown import breakdown

    medians = await breakdown(redis_url, rounds=5)
    assert set(medians) == {
        "PING",
        "check_availability (model cap)",
        "team record_spend (model cap)",
        "EVALSHA check, raw",
        "EVALSHA team_record, raw",
        "EVALSHA, the least a check does",
        "EVALSHA, the least a team record does",
        "EVALSHA, empty script",
    }
    assert all(value > 0 for value in medians.values())
    assert await _keys_left(redis_url, "sgfeatbd*") == []


async def test_floor_breakdown_replays_the_command_a_call_sent(
    redis_url: str,
) -> None:
    import uuid
    from decimal import Decimal

    from bench.common import delete_prefix, first_command

    from spendgate import BudgetConfig, BudgetManager

    prefix = f"sgfloorcmd{uuid.uuid4().hex[:8]}"
    manager = BudgetManager(BudgetConfig(redis_url=redis_url, key_prefix=prefix))
    await manager.open()
    try:

        async def op(i: int) -> object:
            return await manager.record_spend("u-cmd", Decimal("0.25"))

        command = await first_command(manager, op, "record")
        record_sha = manager._store.ensure_open().lua_record.sha
        # EVALSHA <the record script> 1 <idempotency key> <arguments...>
        assert command[:3] == ("EVALSHA", record_sha, 1)
        sent = [str(arg) for arg in command]
        assert "u-cmd" in sent and "250000" in sent  # the user, the micro-units
        # the call went through, and the client is its own again
        usage = await manager.get_usage("u-cmd")
        assert usage["user"].daily.spent == Decimal("0.25")
        assert "execute_command" not in vars(manager.redis)
    finally:
        await delete_prefix(manager.redis, prefix)
        await manager.aclose()
    assert await _keys_left(redis_url, f"{prefix}*") == []


async def test_interleaved_samples_turns_rotate_and_indexes_never_repeat() -> None:
    from bench.measure import interleaved_samples

    calls: list[tuple[str, int]] = []

    def subject(name: str) -> Callable[[int], Awaitable[None]]:
        async def call(i: int) -> None:
            calls.append((name, i))

        return call

    ops = {"a": subject("a"), "b": subject("b")}
    # call by call, from index 10: a is op 0 of 2, b op 1 (indexes (10+i)*2+k)
    samples = await interleaved_samples(ops, 3, start=10)
    assert calls == [("a", 20), ("b", 21), ("b", 23), ("a", 22), ("a", 24), ("b", 25)]
    assert {name: len(times) for name, times in samples.items()} == {"a": 3, "b": 3}
    # in blocks of 2: two calls of one op in a row, the last block short
    calls.clear()
    samples = await interleaved_samples(ops, 5, block=2)
    assert calls == [
        ("a", 0), ("a", 2), ("b", 1), ("b", 3),
        ("b", 5), ("b", 7), ("a", 4), ("a", 6),
        ("a", 8), ("b", 9),
    ]  # fmt: skip
    assert {name: len(times) for name, times in samples.items()} == {"a": 5, "b": 5}
    calls.clear()
    with pytest.raises(ValueError, match="block at least 1"):
        await interleaved_samples(ops, 5, block=0)
    assert calls == []


async def test_floor_breakdown_refuses_empty_rounds_and_blocks() -> None:
    from bench.floor_breakdown import breakdown

    # refused before connecting to anything
    with pytest.raises(ValueError, match="at least 1"):
        await breakdown("redis://127.0.0.1:1/0", rounds=0)
    with pytest.raises(ValueError, match="at least 1"):
        await breakdown("redis://127.0.0.1:1/0", rounds=5, block=0)


async def test_versus_compares_two_versions_and_leaves_nothing(
    redis_url: str,
) -> None:
    import subprocess

    from bench.versus import ROOT, compare

    # HEAD against this checkout: two fresh processes, the same table shape.
    table = await asyncio.to_thread(compare, "HEAD", 1, 30, redis_url)
    lines = table.splitlines()
    assert lines[0] == "| | HEAD: median (range) | this checkout: median (range) |"
    rows = {line.split(" | ")[0].strip("| `"): line for line in lines[2:]}
    assert set(rows) == {
        "PING p50",
        "check_availability",
        "record_spend",
        "reserve+settle",
        "deduct",  # both versions have it
        "team_record_spend",  # and teams
        "team_deduct",
    }
    for line in rows.values():
        for cell in line.strip("|").split(" | ")[1:]:
            median = float(cell.split()[0].rstrip("×"))
            assert median > 0
    worktrees = subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert not [w for w in worktrees if "spendgate-versus-" in w]  # removed
    assert await _keys_left(redis_url, "sgversus*") == []
