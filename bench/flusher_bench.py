"""The flusher's benchmark: ``python -m bench.flusher_bench``.

Two measurements against the machine's real Redis and PostgreSQL, in a
database and key prefix of their own (dropped and deleted afterwards):

1. **Throughput**: the stream is filled with ``--entries`` facts recorded
   through ``BudgetManager.record_spend`` (so the entries are exactly what the
   guard writes), then one :class:`~spendgate.Flusher` drains it with
   ``run_once()``; entries per second = entries / wall time, from the first
   read to the last ``XACK``/``XDEL``, for each batch size, best and median
   of ``--rounds`` (the table is truncated between rounds).
2. **End-to-end lag under load**: a producer process records spends at a
   steady ``--rate`` facts/s for ``--duration`` seconds while a
   ``spendgate flush`` process (the real CLI) runs at the default 1 s flush
   interval; lag = ``inserted_at - occurred_at`` of every row (both stamped
   by this machine's clock; ``inserted_at`` is ``clock_timestamp()`` of the
   insert), over the rows after a warm-up. Target: under two flush intervals.

Results go to ``bench/results/flusher.json`` (with machine, Redis and
Postgres versions) and ``bench/results/flusher.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.common import RESULTS_DIR, delete_prefix
from bench.report import flusher_markdown

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/9"
DEFAULT_POSTGRES_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _with_database(dsn: str, database: str) -> str:
    return dsn.rpartition("/")[0] + "/" + database


async def _fill(
    redis_url: str, prefix: str, entries: int, concurrency: int = 256
) -> float:
    """Record ``entries`` spends as fast as the guard takes them; returns facts/s."""
    from spendgate import BudgetConfig, BudgetManager

    config = BudgetConfig(
        redis_url=redis_url,
        key_prefix=prefix,
        postgres_dsn="postgresql://unused/x",  # an uncapped stream
        daily_user_limit=None,
        daily_project_limit=None,
        daily_global_limit=None,
        redis_timeout_seconds=5,
        redis_connect_timeout_seconds=5,
    )
    async with BudgetManager(config) as budget:
        counter = iter(range(entries))
        started = time.perf_counter()

        async def worker() -> None:
            for i in counter:
                await budget.record_spend(
                    f"user-{i % 1000}",
                    Decimal(i % 5000) / 1000,
                    project_id=f"p{i % 10}",
                    model=("gpt-4o", "claude-3-5")[i % 2],
                    metadata={"input_tokens": i % 900, "output_tokens": i % 300},
                )

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        rate = entries / (time.perf_counter() - started)
        in_stream = await budget.redis.xlen(budget.keys.ledger)
    if in_stream != entries:  # a fact went to the local spool: not a fair run
        raise RuntimeError(f"{in_stream} of {entries} facts reached the stream")
    return rate


async def _truncate(dsn: str) -> None:
    from spendgate.ledger.pg import connect

    conn = await connect(dsn)
    try:
        await conn.execute("TRUNCATE spendgate_ledger")
    finally:
        await conn.close()


async def throughput(
    redis_url: str, dsn: str, entries: int, batch_sizes: list[int], rounds: int
) -> dict[str, Any]:
    """Drain a full stream with one flusher, per batch size."""
    from redis.asyncio import Redis

    from spendgate import BudgetConfig, Flusher

    results: dict[str, Any] = {
        "entries": entries,
        "rounds": rounds,
        "by_batch_size": [],
    }
    fill_rates = []
    for batch_size in batch_sizes:
        rates = []
        for round_ in range(rounds):
            prefix = f"sgbench{uuid.uuid4().hex[:8]}"
            await _truncate(dsn)
            fill_rates.append(await _fill(redis_url, prefix, entries))
            config = BudgetConfig(
                redis_url=redis_url,
                key_prefix=prefix,
                postgres_dsn=dsn,
                flush_batch_size=batch_size,
            )
            flusher = Flusher(config)
            try:
                await flusher.connect()
                started = time.perf_counter()
                moved = await flusher.run_once()
                elapsed = time.perf_counter() - started
            finally:
                await flusher.aclose()
            if moved != entries:
                raise RuntimeError(f"moved {moved} of {entries} entries")
            rates.append(entries / elapsed)
            print(
                f"  batch {batch_size}, round {round_ + 1}: "
                f"{entries / elapsed:,.0f} entries/s",
                file=sys.stderr,
            )
            client = Redis.from_url(redis_url)
            await delete_prefix(client, prefix)
            await client.aclose()
        results["by_batch_size"].append(
            {
                "batch_size": batch_size,
                "entries_per_s_best": round(max(rates)),
                "entries_per_s_median": round(statistics.median(rates)),
                "entries_per_s_all": [round(r) for r in rates],
            }
        )
    results["fill_facts_per_s_median"] = round(statistics.median(fill_rates))
    return results


def _produce(redis_url: str, prefix: str, rate: int, duration: float) -> None:
    """Producer process: ``rate`` spends per second, paced in 10 ms ticks."""

    async def run() -> None:
        from spendgate import BudgetConfig, BudgetManager

        config = BudgetConfig(
            redis_url=redis_url,
            key_prefix=prefix,
            postgres_dsn="postgresql://unused/x",
            daily_user_limit=None,
            daily_project_limit=None,
            daily_global_limit=None,
            redis_timeout_seconds=5,
            redis_connect_timeout_seconds=5,
        )
        tick = 0.01
        per_tick = rate * tick
        async with BudgetManager(config) as budget:
            loop = asyncio.get_running_loop()
            start = loop.time()
            done = 0
            pending: set[asyncio.Task[Any]] = set()
            while (now := loop.time()) - start < duration:
                due = int((now - start) / tick * per_tick) - done
                for _ in range(max(0, due)):
                    i = done
                    task = asyncio.create_task(
                        budget.record_spend(
                            f"user-{i % 1000}",
                            Decimal(i % 5000) / 1000,
                            project_id=f"p{i % 10}",
                            model="gpt-4o",
                        )
                    )
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                    done += 1
                await asyncio.sleep(tick)
            await asyncio.gather(*pending)
            elapsed = loop.time() - start
        print(json.dumps({"produced": done, "seconds": elapsed}))

    asyncio.run(run())


async def lag(
    redis_url: str, dsn: str, rate: int, duration: float, interval: float, warmup: float
) -> dict[str, Any]:
    """Sustained load through a producer process and a ``spendgate flush`` process."""
    from redis.asyncio import Redis

    from spendgate.ledger.pg import connect

    await _truncate(dsn)
    prefix = f"sgbench{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDGATE_")}
    env.update(
        SPENDGATE_REDIS_URL=redis_url,
        SPENDGATE_KEY_PREFIX=prefix,
        SPENDGATE_POSTGRES_DSN=dsn,
        SPENDGATE_FLUSH_INTERVAL_SECONDS=str(interval),
    )
    flusher = subprocess.Popen(
        [sys.executable, "-m", "spendgate.cli", "flush"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await asyncio.sleep(1.0)  # let it connect
        producer = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.flusher_bench",
            "--produce",
            prefix,
            "--rate",
            str(rate),
            "--duration",
            str(duration),
            "--redis-url",
            redis_url,
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parent.parent,
        )
        out, _ = await producer.communicate()
        produced = json.loads(out.decode().strip().splitlines()[-1])
        client = Redis.from_url(redis_url)
        stream = f"{prefix}:{{sg}}:ledger"
        deadline = time.monotonic() + 60
        while await client.xlen(stream) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await delete_prefix(client, prefix)
        await client.aclose()
    finally:
        flusher.terminate()
        flusher.wait(30)
    conn = await connect(dsn)
    try:
        row = await conn.fetchrow(
            "WITH t AS (SELECT min(occurred_at) AS t0 FROM spendgate_ledger),"
            " l AS (SELECT extract(epoch FROM inserted_at - occurred_at) AS lag"
            "  FROM spendgate_ledger, t"
            "  WHERE occurred_at >= t0 + $1 * interval '1 second')"
            " SELECT count(*) AS n,"
            " percentile_cont(0.5) WITHIN GROUP (ORDER BY lag) AS p50,"
            " percentile_cont(0.99) WITHIN GROUP (ORDER BY lag) AS p99,"
            " max(lag) AS max FROM l",
            warmup,
        )
        rows = await conn.fetchval("SELECT count(*) FROM spendgate_ledger")
    finally:
        await conn.close()
    return {
        "target_rate_facts_per_s": rate,
        "achieved_rate_facts_per_s": round(produced["produced"] / produced["seconds"]),
        "produced": produced["produced"],
        "rows_in_postgres": rows,
        "duration_s": duration,
        "warmup_s": warmup,
        "flush_interval_s": interval,
        "rows_measured": row["n"],
        "lag_p50_s": round(float(row["p50"]), 3),
        "lag_p99_s": round(float(row["p99"]), 3),
        "lag_max_s": round(float(row["max"]), 3),
        "lag_max_in_flush_intervals": round(float(row["max"]) / interval, 2),
    }


async def _versions(redis_url: str, dsn: str) -> dict[str, Any]:
    from redis.asyncio import Redis

    from spendgate.ledger.pg import connect

    client = Redis.from_url(redis_url)
    info = await client.info("server")
    await client.aclose()
    conn = await connect(dsn)
    try:
        pg = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    import asyncpg

    return {
        "redis": info.get("redis_version"),
        "postgres": pg,
        "asyncpg": asyncpg.__version__,
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from bench.common import machine_info
    from spendgate.ledger.migrations import migrate_dsn
    from spendgate.ledger.pg import connect

    admin = await connect(args.postgres_dsn)
    database = f"sgbench_{uuid.uuid4().hex[:8]}"
    await admin.execute(f'CREATE DATABASE "{database}"')
    dsn = _with_database(args.postgres_dsn, database)
    try:
        await migrate_dsn(dsn)
        result: dict[str, Any] = {
            "command": " ".join(["python -m bench.flusher_bench", *sys.argv[1:]]),
            "machine": machine_info(),
            "versions": await _versions(args.redis_url, dsn),
        }
        print("throughput...", file=sys.stderr)
        result["throughput"] = await throughput(
            args.redis_url,
            dsn,
            args.entries,
            [int(b) for b in args.batch_sizes.split(",")],
            args.rounds,
        )
        if args.rate > 0:
            print(
                f"lag at {args.rate} facts/s for {args.duration}s...", file=sys.stderr
            )
            result["lag"] = await lag(
                args.redis_url,
                dsn,
                args.rate,
                args.duration,
                args.interval,
                args.warmup,
            )
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.flusher_bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument(
        "--postgres-dsn",
        default=os.environ.get("SPENDGATE_BENCH_POSTGRES_DSN", DEFAULT_POSTGRES_DSN),
        help="a server where the bench may create and drop its own database",
    )
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--batch-sizes", default="1000,5000,20000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--rate", type=int, default=5000, help="facts/s; 0 skips the lag run"
    )
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--produce", metavar="PREFIX", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def cli(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.produce:
        _produce(args.redis_url, args.produce, args.rate, args.duration)
        return 0
    result = asyncio.run(main(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "flusher.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "flusher.md").write_text(flusher_markdown(result))
    print(flusher_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
