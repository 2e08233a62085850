"""The ``spendgate`` command: one entry point, subcommands per area.

::

    cli/__init__.py   build_parser, main, the exit codes
    cli/printer.py    tables, JSON, error lines: one escaping rule
    cli/runner.py     settings, the event loop, errors -> exit codes
    cli/logs.py       spendgate's log lines on stderr, at --log-level
    cli/serve.py      serve
    cli/operator.py   usage, limits get|set|clear
    cli/credits.py    credits add|sweep, balance, refund
    cli/deduct.py     deduct (a usage, an amount or a fixed job)
    cli/plans.py      plans list|set|assign|unassign|show, features check|use
    cli/plan_input.py what plans set reads (options or a file), checked first
    cli/ledger.py     migrate, flush, reconcile
    cli/report.py     report
    cli/corrections.py adjust, transactions
    cli/events.py     events run|tail
    cli/rebucket.py   rebucket (keys to another cluster_buckets)
    cli/demo/         demo (its steps: guard, credits, extras)

Heavy imports (asyncpg, fastapi, uvicorn) happen inside a command, never at
start-up. Exit codes are :class:`spendgate.errors.ExitCode`: 0 success,
1 failure, 2 usage or settings error, 3 refused (over budget), 4 store
unavailable.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from spendgate.cli import logs
from spendgate.cli.corrections import add_adjust, add_transactions
from spendgate.cli.credits import add_balance, add_credits, add_refund
from spendgate.cli.deduct import add_deduct
from spendgate.cli.demo import add_demo
from spendgate.cli.events import add_events
from spendgate.cli.ledger import add_flush, add_migrate, add_reconcile
from spendgate.cli.operator import add_limits, add_usage
from spendgate.cli.plans import add_features, add_plans
from spendgate.cli.pricing import add_pricing
from spendgate.cli.printer import fail
from spendgate.cli.rebucket import add_rebucket
from spendgate.cli.report import add_report
from spendgate.cli.runner import output_closed, output_lost
from spendgate.cli.serve import add_serve
from spendgate.cli.teams import add_teams
from spendgate.errors import ConfigurationError, ExitCode

EXIT_OK = ExitCode.OK
EXIT_FAILURE = ExitCode.FAILURE
EXIT_USAGE = ExitCode.USAGE
EXIT_REFUSED = ExitCode.REFUSED
EXIT_UNAVAILABLE = ExitCode.UNAVAILABLE

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "build_parser",
    "main",
]


def build_parser() -> argparse.ArgumentParser:
    """The ``spendgate`` parser with every subcommand registered."""
    from spendgate import __version__

    parser = argparse.ArgumentParser(
        prog="spendgate",
        description="spendgate: a Redis-backed, low-latency budget guard for LLM apps",
    )
    parser.add_argument(
        "--version", action="version", version=f"spendgate {__version__}"
    )
    parser.add_argument(
        "--log-level",
        choices=logs.LEVELS,
        default=None,
        help=f"spendgate's log lines on stderr from this level up (default: "
        f"{logs.SERVE_DEFAULT} for serve, error for demo, {logs.DEFAULT} for the "
        "other commands)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in (
        add_demo,
        add_migrate,
        add_flush,
        add_report,
        add_reconcile,
        add_serve,
        add_usage,
        add_limits,
        add_credits,
        add_balance,
        add_refund,
        add_deduct,
        add_teams,
        add_adjust,
        add_transactions,
        add_pricing,
        add_plans,
        add_features,
        add_events,
        add_rebucket,
    ):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``spendgate`` with ``argv`` (default: the process's arguments);
    returns the exit code."""
    args = build_parser().parse_args(argv)
    if args.log_level is None:
        args.log_level = getattr(args, "log_level_default", logs.DEFAULT)
    try:
        logs.configure(args.log_level)
    except ConfigurationError as exc:  # (its message is redacted)
        return int(fail(f"invalid settings: {exc}", ExitCode.USAGE))
    try:
        return int(args.handler(args))
    except BrokenPipeError as exc:  # (a command that prints without run())
        if not output_closed(exc):
            raise
        return int(output_lost())
