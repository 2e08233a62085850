"""``python -m bench``: run the hot-path benchmark (``make bench``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.runner import DEFAULT_REDIS_URL, RESULTS_DIR, Options, main_sync


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="spendgate's hot path vs the Redis round-trip floor and the peer",
    )
    parser.add_argument(
        "--redis-url",
        default=DEFAULT_REDIS_URL,
        help=f"the Redis to measure against (default {DEFAULT_REDIS_URL})",
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="interleaved rounds (default 5)"
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=2000,
        help="sequential calls per operation per round (default 2000)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=0.75,
        help="seconds per throughput run (default 0.75)",
    )
    parser.add_argument(
        "--concurrency",
        default="1,16,64,256",
        help="concurrent task counts, comma-separated (default 1,16,64,256)",
    )
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument(
        "--projects",
        type=int,
        default=10,
        help="distinct projects the calls rotate over; 0 = no project",
    )
    parser.add_argument("--no-peer", action="store_true", help="skip coreason-budget")
    parser.add_argument(
        "--no-cluster",
        action="store_true",
        help="skip the Redis Cluster section (its own redis-servers: a single "
        "one, a 1-master and two 3-master clusters, one of them sharded)",
    )
    parser.add_argument("--no-chart", action="store_true")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short run: 2 rounds of 500 samples, 0.3 s throughput runs",
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR, help="results directory"
    )
    args = parser.parse_args(argv)
    options = Options(
        redis_url=args.redis_url,
        rounds=args.rounds,
        samples=args.samples,
        duration_s=args.duration,
        concurrency=tuple(int(c) for c in args.concurrency.split(",") if c.strip()),
        users=args.users,
        projects=args.projects,
        peer=not args.no_peer,
        cluster=not args.no_cluster,
        chart=not args.no_chart,
        out_dir=args.out,
        command=" ".join(
            ["python -m bench", *(argv if argv is not None else sys.argv[1:])]
        ),
    )
    if args.quick:
        options.rounds, options.samples, options.duration_s = 2, 500, 0.3
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    results = main_sync(options)
    print((options.out_dir / "bench.md").read_text())
    missed = [t["name"] for t in results["targets"] if not t["met"]]
    if missed:
        print("bench: targets not met: " + "; ".join(missed), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
