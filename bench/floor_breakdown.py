"""Where a fact's latency goes: the request itself versus its script's work.

Interleaved in one run against the machine's Redis (db 12, prefixes of its
own, deleted afterwards): PING, ``check_availability``, ``record_spend``,
``reserve`` + ``settle``, and the same ``record_spend`` call on a second
manager whose ``record`` script is replaced by a trivial one that only
returns the payload. That line is what a record-sized call costs with
(almost) no Lua at all, so the distance between it and ``record_spend`` is
the script's work as the caller sees it. Two raw ``EVALSHA`` calls through
the same client take the call apart further: an empty script with no
arguments (a script call's own cost beside PING), and the trivial script
with the arguments a ``record_spend`` sent (what the arguments cost; the
distance from there to the trivial ``record_spend`` is the manager's
Python).

``--block N`` runs each subject N times in a row before the next one (``make
bench`` timed blocks of 2,000 calls until it went call by call); the
default, 1, interleaves call by call. The PING floor depends on it: alone in
a long block, its own short path stays in the caches of both processes.

``python -m bench.floor_breakdown [--rounds N] [--block N] [--redis-url URL]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from bench.common import first_command
from bench.measure import interleaved_samples
from bench.runner import SEQUENTIAL, delete_prefix, hot_path_ops
from spendgate import BudgetConfig, BudgetManager

# record.lua's answer, "entry|now_ms" (ARGV[8] and ARGV[1]), and nothing else
TRIVIAL_RECORD = b"\nreturn {0, ARGV[8] .. '|' .. ARGV[1]}"


async def breakdown(redis_url: str, rounds: int, block: int = 1) -> dict[str, float]:
    """Median latency in µs of each subject, measured in interleaved rounds.

    :param rounds: calls timed per subject
    :param block: calls of one subject in a row before the next subject's
    """
    if rounds < 1 or block < 1:
        raise ValueError("rounds and block must be at least 1")
    run = uuid.uuid4().hex[:8]
    real_prefix, stub_prefix = f"sgfloor{run}a", f"sgfloor{run}b"

    def manager(prefix: str) -> BudgetManager:
        return BudgetManager(
            BudgetConfig(redis_url=redis_url, key_prefix=prefix, daily_user_limit=1000)
        )

    real, stub = manager(real_prefix), manager(stub_prefix)
    await real.open()
    await stub.open()
    try:
        # The stub keeps the library prelude (same script size to load) and
        # answers what record.lua answers, without touching any key.
        scripts = stub._store.ensure_open()
        source = scripts.lua_record.script
        # (record.lua's own code starts where its idempotency key is read)
        prelude, found, _ = source.rpartition(b"\nlocal ikey = KEYS[1]")
        assert found, "record.lua's body moved: update the stub's split"
        scripts.lua_record.sha = await stub.redis.script_load(prelude + TRIVIAL_RECORD)

        empty = await stub.redis.script_load(b"return 1")

        users, projects = [f"user{i}" for i in range(500)], ["p1"]
        ops, stub_ops = (hot_path_ops(m, users, projects) for m in (real, stub))
        # The command one record_spend sends, as sent: replayed as is (the
        # trivial script writes nothing, so the same arguments never clash).
        record_command = await first_command(stub, stub_ops["record_spend"], "record")
        client = real.redis
        subjects: dict[str, Callable[[int], Awaitable[Any]]] = {
            "PING": lambda i: client.ping(),
            **{name: ops[name] for name in SEQUENTIAL},
            "record_spend, trivial script": stub_ops["record_spend"],
            "EVALSHA, empty script": lambda i: client.execute_command(
                "EVALSHA", empty, 0
            ),
            "EVALSHA, trivial, record's args": lambda i: client.execute_command(
                *record_command
            ),
        }
        # warm-up: connections, scripts, caches
        await interleaved_samples(subjects, 300)
        samples = await interleaved_samples(subjects, rounds, block=block)
        return {name: statistics.median(v) / 1000 for name, v in samples.items()}
    finally:
        await delete_prefix(real.redis, real_prefix)
        await delete_prefix(real.redis, stub_prefix)
        await real.aclose()
        await stub.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--rounds", type=int, default=8000)
    parser.add_argument(
        "--block", type=int, default=1, help="calls of a subject in a row (default 1)"
    )
    args = parser.parse_args()
    medians = asyncio.run(breakdown(args.redis_url, args.rounds, args.block))
    floor = medians["PING"]
    print(
        f"p50 of {args.rounds} calls each, in blocks of {args.block}, "
        f"on {args.redis_url}"
    )
    for name, micros in medians.items():
        print(f"{name:32} {micros:7.0f} µs  {micros / floor:5.2f}× PING")


if __name__ == "__main__":
    main()
