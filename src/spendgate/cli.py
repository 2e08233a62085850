# PARALLEL WORK IN PROGRESS (temporary, removed before release): several engineers edit this tree at
# once. Before editing anything, read /tmp/helper_common.md: collaboration and commit rules.
"""The ``spendgate`` command line.

Each subcommand is added by one ``_add_<name>`` function; heavy imports
(asyncpg, fastapi, ...) happen inside the command, never at start-up.
Exit codes: 0 success, 1 failure, 2 usage error, 3 refused (over budget),
4 store unavailable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_UNAVAILABLE = 4


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "demo", help="a narrated walkthrough on the embedded store (no Redis needed)"
    )
    parser.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from spendgate.demo import main as demo_main

    demo_main()
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    from spendgate import __version__

    parser = argparse.ArgumentParser(
        prog="spendgate",
        description="spendgate: a Redis-backed, low-latency budget guard for LLM apps",
    )
    parser.add_argument("--version", action="version", version=f"spendgate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_demo(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
