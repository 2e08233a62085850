"""The ledger subcommands of ``spendgate``: migrate, flush, report, reconcile.

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
import sys
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from spendgate.cli.arguments import calendar_day, moment
from spendgate.cli.printer import dash, print_json, print_table, printable
from spendgate.cli.runner import UsageError, run, settings
from spendgate.errors import ExitCode

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

#: report kinds -> what they show
REPORT_KINDS = {
    "users": "spend per user, largest first",
    "projects": "spend per project, largest first",
    "models": "spend per model, largest first",
    "top-users": "the users who spent the most (--limit, default 10)",
    "daily": "spend per UTC day",
    "stats": "count, total, distinct users, mean and percentiles of cost per call",
    "credits": "credits granted, expired and spent per user, most granted first",
}


# -- registration ------------------------------------------------------------------


def add_migrate(sub: SubParsers) -> None:
    parser = sub.add_parser(
        "migrate",
        help="create or upgrade the Postgres ledger schema",
        description="Apply the migrations shipped with spendgate that the database "
        "lacks (idempotent; versions are recorded in spendgate_schema_version). "
        "Connects to SPENDGATE_POSTGRES_DSN.",
    )
    _dsn_option(parser)
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
    _dsn_option(parser)
    parser.set_defaults(handler=run_flush)


def add_report(sub: SubParsers) -> None:
    parser = sub.add_parser(
        "report",
        help="spend analytics from the Postgres ledger",
        description="Net spend (charges less their refunds, plus adjustments) "
        "over a time window, from spendgate_ledger, with the part of it plans' "
        "free allowances paid (allowance). Kinds: "
        + "; ".join(f"{k}: {v}" for k, v in REPORT_KINDS.items()),
    )
    parser.add_argument("kind", choices=list(REPORT_KINDS), help="what to report")
    parser.add_argument(
        "--since",
        type=moment,
        help="start of the window, inclusive: YYYY-MM-DD (00:00 UTC) or an ISO "
        "datetime (default: the beginning)",
    )
    parser.add_argument(
        "--until",
        type=moment,
        help="end of the window, exclusive, same forms (default: no end)",
    )
    parser.add_argument("--limit", type=int, help="at most this many rows")
    parser.add_argument(
        "--json", action="store_true", help="print JSON instead of a table"
    )
    _dsn_option(parser)
    parser.set_defaults(handler=run_report)


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
    _dsn_option(parser)
    parser.set_defaults(handler=run_reconcile)


def _dsn_option(parser: argparse.ArgumentParser) -> None:
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
        if args.claim_idle <= 0:
            raise UsageError("--claim-idle must be above 0")
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


def run_report(args: argparse.Namespace) -> int:
    async def body() -> int:
        from spendgate.ledger.analytics import Analytics

        config = settings(args, needs_postgres=True)
        if args.limit is not None and args.limit < 1:
            raise UsageError("--limit must be at least 1")
        async with Analytics(config) as analytics:
            result = await _report(analytics, args)
        if args.json:
            print_json(
                {
                    "kind": args.kind,
                    "since": args.since,
                    "until": args.until,
                    "unit": config.unit,
                    "rows": result,
                }
            )
            return ExitCode.OK
        window = (
            f"{args.since.isoformat() if args.since else 'the beginning'} to "
            f"{args.until.isoformat() if args.until else 'now'}"
        )
        print(f"{args.kind}, {window} ({config.unit})")
        _print_report(args.kind, result)
        return ExitCode.OK

    return run(body)


async def _report(analytics: Any, args: argparse.Namespace) -> Any:
    window = (args.since, args.until)
    if args.kind == "stats":
        return await analytics.stats(*window)
    if args.kind == "daily":
        rows = await analytics.daily_spend(*window)
        return rows[-args.limit :] if args.limit else rows
    if args.kind == "credits":
        return await analytics.credits_by_user(*window, limit=args.limit)
    if args.kind == "top-users":
        return await analytics.top_users(*window, limit=args.limit or 10)
    group = {"users": "user", "projects": "project", "models": "model"}[args.kind]
    return await analytics.spend_by(group, *window, limit=args.limit)


def _print_report(kind: str, result: Any) -> None:
    if kind == "stats":
        stats = result
        rows = [
            ["calls", stats.calls],
            ["total", stats.total],
            ["paid by allowances", stats.allowance],
            ["distinct users", stats.distinct_users],
            ["distinct projects", stats.distinct_projects],
            ["mean per call", dash(stats.mean)],
            ["min per call", dash(stats.minimum)],
            ["max per call", dash(stats.maximum)],
            *[
                [f"p{p * 100:g} per call", dash(v)]
                for p, v in stats.percentiles.items()
            ],
            ["input tokens", stats.input_tokens],
            ["output tokens", stats.output_tokens],
        ]
        print_table(["measure", "value"], rows)
    elif kind == "credits":
        print_table(
            ["user", "granted", "expired", "spent", "allowance", "net"],
            [
                [
                    printable(f.user_id),
                    f.granted,
                    f.expired,
                    f.spent,
                    f.allowance,
                    f.net,
                ]
                for f in result
            ],
        )
    elif kind == "daily":
        print_table(
            ["day", "calls", "users", "total", "allowance"],
            [
                [d.day.isoformat(), d.calls, d.users, d.total, d.allowance]
                for d in result
            ],
        )
    else:
        label = {"projects": "project", "models": "model"}.get(kind, "user")
        print_table(
            [label, "calls", "total", "allowance", "input tokens", "output tokens"],
            [
                [
                    dash(g.key, "(none)"),
                    g.calls,
                    g.total,
                    g.allowance,
                    g.input_tokens,
                    g.output_tokens,
                ]
                for g in result
            ],
        )


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
