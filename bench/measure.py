"""Measuring loops shared by spendgate's side and the peer's worker.

Nothing here imports spendgate or the peer: the same code times both, so
neither side gets a cheaper stopwatch. Latencies are integer nanoseconds from
``time.perf_counter_ns``; throughput counts completed operations over a
wall-clock interval.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence

#: an operation to time: called with the running sample index
Op = Callable[[int], Awaitable[object]]

#: the percentiles every latency is reported at
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


async def interleaved_samples(
    ops: Mapping[str, Op], n: int, start: int = 0, block: int = 1
) -> dict[str, list[int]]:
    """Run every op ``n`` times, one call after another, the ops in turn:
    ``block`` calls of one op in a row (1: call by call), then the next op's.
    The ops' order rotates from one turn to the next, so no op always runs
    right after the same other one.

    The ``k``-th of ``m`` ops is called with the indexes ``(start + i) * m +
    k`` for ``i`` from 0 to ``n - 1``: no two calls share an index (so no op
    finds the caches warmed by another's call for the same user).

    :return: nanoseconds per call of each op, in call order
    """
    if n < 0 or block < 1:
        raise ValueError("n must be at least 0 and block at least 1")
    names = list(ops)
    m = len(names)
    out: dict[str, list[int]] = {name: [] for name in names}
    clock = time.perf_counter_ns
    for turn, first in enumerate(range(start, start + n, block)):
        last = min(first + block, start + n)
        for k in range(m):
            slot = (turn + k) % m
            op, times = ops[names[slot]], out[names[slot]]
            for i in range(first, last):
                t0 = clock()
                await op(i * m + slot)
                times.append(clock() - t0)
    return out


async def throughput(
    op: Op, concurrency: int, duration_s: float, start: int = 0
) -> tuple[int, float]:
    """Run ``op`` from ``concurrency`` tasks in a loop for ``duration_s``.

    Every task starts together and stops issuing new calls once the interval
    has passed; calls still in flight then are awaited and counted, and the
    elapsed time runs until the last one is done, so nothing is dropped.

    :return: (completed calls, elapsed seconds)
    """
    clock = time.perf_counter
    deadline = 0.0
    done = 0
    gate = asyncio.Event()

    async def worker(k: int) -> None:
        nonlocal done
        i = start + k
        await gate.wait()
        while clock() < deadline:
            await op(i)
            done += 1
            i += concurrency

    tasks = [asyncio.ensure_future(worker(k)) for k in range(concurrency)]
    await asyncio.sleep(0)  # every worker is now parked on the gate
    t0 = clock()
    deadline = t0 + duration_s
    gate.set()
    await asyncio.gather(*tasks)
    return done, clock() - t0


def percentile(sorted_values: Sequence[int], pct: float) -> float:
    """The ``pct`` percentile of already sorted values (nearest rank)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * pct // 100))  # ceil, nearest-rank method
    return float(sorted_values[int(rank) - 1])


def summarize_ns(samples: Sequence[int]) -> dict[str, float]:
    """p50/p90/p99/p99.9, min, mean and max of nanosecond samples, in µs."""
    ordered = sorted(samples)
    out = {f"p{pct:g}": percentile(ordered, pct) / 1000 for pct in PERCENTILES}
    out["min"] = ordered[0] / 1000 if ordered else float("nan")
    out["max"] = ordered[-1] / 1000 if ordered else float("nan")
    out["mean"] = sum(ordered) / len(ordered) / 1000 if ordered else float("nan")
    out["n"] = float(len(ordered))
    return out


async def print_p50_against_ping(ops: Mapping[str, Op], calls: int) -> None:
    """Warm up, time ``ops`` (one named ``"PING"``) interleaved ``calls``
    times each, and print each one's p50 in µs and as a multiple of PING's:
    the small benches' one table."""
    await interleaved_samples(ops, min(300, calls))  # warm-up
    samples = await interleaved_samples(ops, calls, calls)
    ping_p50 = summarize_ns(samples["PING"])["p50"]
    width = max(len(name) for name in samples) + 2
    for name, values in samples.items():
        p50 = summarize_ns(values)["p50"]
        print(f"{name:{width}} p50 {p50:7.1f} µs  {p50 / ping_p50:5.2f}x PING")
