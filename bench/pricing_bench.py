"""``python -m bench.pricing_bench``: what pricing one usage with a price
book costs, on the client, without Redis.

The book prices five dimensions with expressions (DESIGN.md's example: a
model, two tools, search, cache; and a fixed job), the usage touches every
one of them, and :meth:`PricingEngine.calculate` is timed call by call after
a warm-up: p50, p90 and p99 in microseconds. ``calculate_fixed`` and loading
(parsing and compiling) the book are timed the same way. The target
(issue 17) is a p50 of at most 20 µs for ``calculate``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

from spendgate import PricingEngine, ToolCall, UsageMetrics

#: the book timed: DESIGN.md's, five dimensions, all expressions
BOOK = {
    "version": 1,
    "models": {
        "gpt-4o": "input_tokens * 0.0000025 + output_tokens * 0.00001",
        "_default": "input_tokens * 0.000001 + output_tokens * 0.000003",
    },
    "tools": {
        "web_search": "this_tool_calls * 0.01",
        "_default": "this_tool_calls * 0.001",
    },
    "search": {"costs": "search_queries * 0.005 + search_results * 0.0005"},
    "cache": {"discount": "-cache_read_tokens * 0.0000012"},
    "fixed": {"batch_job": 20},
    "min_balance": 5,
}

#: a usage that every dimension prices
USAGE = UsageMetrics(
    model="gpt-4o",
    input_tokens=1_500,
    output_tokens=700,
    cache_read_tokens=1_200,
    tool_calls=(ToolCall("web_search"), ToolCall("code_exec")),
    search_queries=2,
    search_results=10,
)

#: the p50 target for calculate, in microseconds
TARGET_US = 20.0


def time_calls(fn: Callable[[], object], samples: int, warm_up: int) -> list[int]:
    """Nanoseconds of each of ``samples`` calls, after ``warm_up`` calls."""
    for _ in range(warm_up):
        fn()
    clock = time.perf_counter_ns
    out = []
    for _ in range(samples):
        started = clock()
        fn()
        out.append(clock() - started)
    return out


def percentile_us(ns: Sequence[int], p: float) -> float:
    ordered = sorted(ns)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))] / 1000


def measure(samples: int) -> dict[str, dict[str, float]]:
    """p50/p90/p99 in µs of calculate, calculate_fixed and loading the book."""
    engine = PricingEngine.from_dict(BOOK)
    subjects: dict[str, tuple[Callable[[], object], int]] = {
        "calculate (5 dimensions)": (lambda: engine.calculate(USAGE), samples),
        "calculate_fixed": (lambda: engine.calculate_fixed("batch_job"), samples),
        "load the book (from_dict)": (
            lambda: PricingEngine.from_dict(BOOK),
            max(1, samples // 50),
        ),
    }
    out = {}
    for name, (fn, n) in subjects.items():
        ns = time_calls(fn, n, warm_up=max(1, n // 10))
        out[name] = {f"p{p:g}": percentile_us(ns, p) for p in (50, 90, 99)}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pricing_bench",
        description="time pricing a usage with a 5-dimension price book",
    )
    parser.add_argument(
        "--samples", type=int, default=50_000, help="calls timed (default 50000)"
    )
    args = parser.parse_args(argv)
    if args.samples < 1:
        parser.error("--samples must be at least 1")
    results = measure(args.samples)
    print(f"{'subject':<28} {'p50 µs':>8} {'p90 µs':>8} {'p99 µs':>8}")
    for name, figures in results.items():
        cells = " ".join(f"{figures[k]:8.2f}" for k in ("p50", "p90", "p99"))
        print(f"{name:<28} {cells}")
    p50 = results["calculate (5 dimensions)"]["p50"]
    verdict = "within" if p50 <= TARGET_US else "ABOVE"
    print(f"calculate p50 {p50:.2f} µs: {verdict} the {TARGET_US:g} µs target")
    return 0 if p50 <= TARGET_US else 1


if __name__ == "__main__":
    sys.exit(main())
