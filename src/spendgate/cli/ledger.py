"""The ledger subcommands of ``spendgate``: migrate, flush, reconcile
(``report``: :mod:`spendgate.cli.report`).

Registered by :mod:`spendgate.cli`; this module imports only the standard
library and the CLI's own modules at load time, and asyncpg when a command
runs. Settings come from the
``SPENDGATE_*`` environment (``SPENDGATE_POSTGRES_DSN``,
``SPENDGATE_REDIS_URL``, ``SPENDGATE_KEY_PREFIX``, ...).

Exit codes (those of :mod:`spendgate.cli`): 0 success; 1 failure, and for
``reconcile`` "differences found"; 2 usage or settings error; 4 Postgres or
Redis unavailable.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from spendgate.cli.arguments import calendar_day
from spendgate.cli.printer import dash, print_json, print_table
from spendgate.cli.runner import UsageError, run, settings
from spendgate.errors import ExitCode

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

# -- registration ------------------------------------------------------------------


def add_migrate(sub: SubParsers) -> None:
    parser = sub.add_parser(
        "migrate",
        help="create or upgrade the Postgres ledger schema",
        description="Apply the migrations shipped with spendgate that the database "
        "lacks (idempotent; versions are recorded in spendgate_schema_version). "
        "Connects to SPENDGATE_POSTGRES_DSN.",
    )
    dsn_option(parser)
    parser.set_defaults(handler=run_migrate)


def add_flush(sub: SubParsers) -> None:
    parser = sub.add_parser(
        "flush",
        help="move the ledger stream from Redis into Postgres",
        description="Move ledger entries from the Redis stream into spendgate_ledger, "
        "exactly once. Runs until SIGINT/SIGTERM, flushing every "
        "SPENDGATE_FLUSH_INTERVAL_SECONDS, or moves what is there with --once. "
        "Several can run at once.",
    )
    parser.add_argument(
        "--once", action="store_true", help="move what the stream holds now, then exit"
    )
    parser.add_argument(
        "--consumer",
        help="this flusher's name in the consumer group; reuse it on restart to "
        "resume its unacknowledged entries at once (default: host-pid-random)",
    )
    parser.add_argument(
        "--claim-idle",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="claim entries idle this long on other (dead) flushers "
        "(default: %(default)s)",
    )
    dsn_option(parser)
    parser.set_defaults(handler=run_flush)


def add_reconcile(sub: SubParsers) -> None:
    parser = sub.add_parser(
        "reconcile",
        help="compare a day's Redis counters with the Postgres ledger",
        description="Compare one day's Redis counters, per scope, with Postgres "
        "plus the not-yet-flushed stream. Exit 0 when they agree, 1 when any "
        "scope differs.",
    )
    parser.add_argument(
        "--day",
        type=calendar_day,
        help="the day in the window time zone (SPENDGATE_WINDOW_TIMEZONE, UTC by "
        "default), YYYY-MM-DD (default: today)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print JSON instead of a table"
    )
    dsn_option(parser)
    parser.set_defaults(handler=run_reconcile)


def dsn_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn", help="Postgres DSN (default: SPENDGATE_POSTGRES_DSN)", default=None
    )


# -- running -----------------------------------------------------------------------


def run_migrate(args: argparse.Namespace) -> int:
    async def body() -> int:
        from spendgate.ledger.migrations import applied_versions, available, migrate
        from spendgate.ledger.pg import connect, require_dsn

        config = settings(args, needs_postgres=True)
        conn = await connect(require_dsn(config.postgres_dsn))
        try:
            applied = await migrate(conn)
            versions = await applied_versions(conn)
        finally:
            await conn.close()
        for m in applied:
            print(f"applied {m.version:04d}_{m.name}")
        latest = max(m.version for m in available())
        state = "up to date" if latest in versions else "behind"
        print(
            f"schema {state}: version {max(versions):04d}, {len(applied)} applied now"
        )
        return ExitCode.OK

    return run(body)


class _Progress:
    """Progress lines on stderr for long work, at most one a second."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._last = time.monotonic()

    def __call__(self, count: int | str) -> None:
        now = time.monotonic()
        if now - self._last >= 1.0:
            self._last = now
            text = count if isinstance(count, str) else f"{count} entries moved"
            print(f"{self.what}: {text}...", file=sys.stderr, flush=True)


def run_flush(args: argparse.Namespace) -> int:
    async def body() -> int:
        import signal

        from spendgate.errors import LedgerUnavailableError
        from spendgate.ledger.flusher import Flusher

        config = settings(args, needs_postgres=True, needs_redis=True)
        if not (math.isfinite(args.claim_idle) and args.claim_idle > 0):
            # (float() reads "nan" and "inf" too: neither is a duration)
            raise UsageError("--claim-idle must be a number of seconds above 0")
        flusher = Flusher(
            config,
            consumer=args.consumer,
            claim_idle_seconds=args.claim_idle,
            progress=_Progress("flush"),
        )
        if args.once:
            try:
                # Fail on an unreachable Postgres even when there is nothing to move.
                await flusher.connect()
                moved = await flusher.run_once()
                backlog = await flusher.backlog()
            finally:
                await flusher.aclose()
            print(f"moved {moved} entries; backlog {backlog.entries}")
            return ExitCode.OK
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, flusher.stop)
        try:
            await flusher.connect()
        except LedgerUnavailableError as exc:
            # Not fatal for a long-running flusher: run() retries with backoff.
            print(f"spendgate: {exc}; retrying", file=sys.stderr)
        print(
            f"flushing as consumer {flusher.consumer} every "
            f"{flusher.interval_seconds}s; SIGINT/SIGTERM stops",
            file=sys.stderr,
        )
        await flusher.run()
        print(f"stopped; moved {flusher.moved_total} entries", file=sys.stderr)
        return ExitCode.OK

    return run(body)


def run_reconcile(args: argparse.Namespace) -> int:
    async def body() -> int:
        from spendgate.ledger.reconcile import reconcile

        config = settings(args, needs_postgres=True, needs_redis=True)
        report = await reconcile(config, args.day, progress=_Progress("reconcile"))
        if args.json:
            raw = asdict(report)
            raw["ok"] = report.ok
            for diff, row in zip(report.differences, raw["differences"], strict=True):
                row["difference"] = diff.difference
            print_json(raw)
        else:
            _print_reconcile(report, config.unit)
        return ExitCode.OK if report.ok else ExitCode.FAILURE

    return run(body)


def _print_reconcile(report: Any, unit: str) -> None:
    print(
        f"reconcile {report.day.isoformat()}: {report.scopes_checked} scopes; "
        f"global counter {report.redis_total}, "
        f"Postgres {report.postgres_total}, "
        f"backlog {report.backlog_total} ({report.backlog_entries} entries) "
        f"{unit}"
    )
    if report.counters_expired:
        print(
            "note: this day's counters are past their retention "
            "(counter_retention_seconds) and may have expired"
        )
    if report.ok:
        print("no differences")
        return
    print_table(
        ["scope", "id", "redis", "postgres", "backlog", "difference"],
        [
            [d.scope, dash(d.scope_id), d.redis, d.postgres, d.backlog, d.difference]
            for d in report.differences
        ],
    )
