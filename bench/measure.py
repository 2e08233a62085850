"""Measuring loops shared by spendgate's side and the peer's worker.

Nothing here imports spendgate or the peer: the same code times both, so
neither side gets a cheaper stopwatch. Latencies are integer nanoseconds from
``time.perf_counter_ns``; throughput counts completed operations over a
wall-clock interval.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

#: an operation to time: called with the running sample index
Op = Callable[[int], Awaitable[object]]

#: the percentiles every latency is reported at
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


async def latency_samples(op: Op, n: int, start: int = 0) -> list[int]:
    """Run ``op`` ``n`` times, one after another, and return each duration.

    :param start: the first sample index passed to ``op`` (so successive
        rounds spread over different users)
    :return: nanoseconds per call, in call order
    """
    out = [0] * n
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        await op(start + i)
        out[i] = clock() - t0
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
