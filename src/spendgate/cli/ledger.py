"""The ledger subcommands of ``spendgate``: migrate, flush, report, reconcile.

Registered by :mod:`spendgate.cli`; this module imports only the standard
library at load time, and asyncpg when a command runs. Settings come from the
``SPENDGATE_*`` environment (``SPENDGATE_POSTGRES_DSN``,
``SPENDGATE_REDIS_URL``, ``SPENDGATE_KEY_PREFIX``, ...).

Exit codes (those of :mod:`spendgate.cli`): 0 success; 1 failure, and for
``reconcile`` "differences found"; 2 usage or settings error; 4 Postgres or
Redis unavailable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, is_dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 4

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
}


class UsageError(Exception):
    """A command line or settings problem: exit code 2."""


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
        description="Spend (kinds spend and settle) over a time window, from "
        "spendgate_ledger. Kinds: "
        + "; ".join(f"{k}: {v}" for k, v in REPORT_KINDS.items()),
    )
    parser.add_argument("kind", choices=list(REPORT_KINDS), help="what to report")
    parser.add_argument(
        "--since",
        type=_moment,
        help="start of the window, inclusive: YYYY-MM-DD (00:00 UTC) or an ISO "
        "datetime (default: the beginning)",
    )
    parser.add_argument(
        "--until",
        type=_moment,
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
        description="Compare one UTC day's Redis counters, per scope, with Postgres "
        "plus the not-yet-flushed stream. Exit 0 when they agree, 1 when any "
        "scope differs.",
    )
    parser.add_argument(
        "--day",
        type=date.fromisoformat,
        help="the UTC day, YYYY-MM-DD (default: today)",
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


def _moment(text: str) -> datetime:
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not YYYY-MM-DD or an ISO datetime"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# -- running -----------------------------------------------------------------------


def _config(args: argparse.Namespace, *, needs_redis: bool) -> Any:
    from spendgate.config import load_config
    from spendgate.errors import ConfigurationError

    overrides = {"postgres_dsn": args.dsn} if getattr(args, "dsn", None) else {}
    try:
        config = load_config(**overrides)
    except ConfigurationError as exc:
        raise UsageError(f"invalid settings: {exc}") from None
    if not config.postgres_dsn:
        raise UsageError(
            "no Postgres configured: set SPENDGATE_POSTGRES_DSN or pass --dsn"
        )
    if needs_redis and not config.redis_url:
        # The embedded store is private to one process: there is nothing to
        # flush or reconcile in a fresh one.
        raise UsageError(
            "SPENDGATE_REDIS_URL is not set: point it at your services' Redis"
        )
    return config


def _run(body: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Run a command, mapping errors to exit codes."""
    from redis import exceptions as redis_errors

    from spendgate.errors import (
        ConfigurationError,
        LedgerUnavailableError,
        SpendgateError,
    )
    from spendgate.ledger.pg import is_unavailable

    try:
        return asyncio.run(body())
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except ConfigurationError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except LedgerUnavailableError as exc:
        return _fail(str(exc), EXIT_UNAVAILABLE)
    except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
        return _fail(f"Redis is unavailable: {exc}", EXIT_UNAVAILABLE)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_FAILURE)
    except (SpendgateError, OSError, redis_errors.RedisError) as exc:
        code = EXIT_UNAVAILABLE if is_unavailable(exc) else EXIT_FAILURE
        return _fail(f"{type(exc).__name__}: {exc}", code)
    except Exception as exc:
        # asyncpg's errors (a missing table, a refused login, ...)
        if type(exc).__module__.startswith("asyncpg"):
            code = EXIT_UNAVAILABLE if is_unavailable(exc) else EXIT_FAILURE
            return _fail(f"Postgres: {type(exc).__name__}: {exc}", code)
        raise


def _fail(message: str, code: int) -> int:
    print(f"spendgate: {message}", file=sys.stderr)
    return code


def run_migrate(args: argparse.Namespace) -> int:
    async def body() -> int:
        from spendgate.ledger.migrations import applied_versions, available, migrate
        from spendgate.ledger.pg import connect

        config = _config(args, needs_redis=False)
        conn = await connect(config.postgres_dsn)
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
        return EXIT_OK

    return _run(body)


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

        config = _config(args, needs_redis=True)
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
            return EXIT_OK
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
        return EXIT_OK

    return _run(body)


def run_report(args: argparse.Namespace) -> int:
    async def body() -> int:
        from spendgate.ledger.analytics import Analytics

        config = _config(args, needs_redis=False)
        if args.limit is not None and args.limit < 1:
            raise UsageError("--limit must be at least 1")
        async with Analytics(config) as analytics:
            result = await _report(analytics, args)
        window = (
            f"{args.since.isoformat() if args.since else 'the beginning'} to "
            f"{args.until.isoformat() if args.until else 'now'}"
        )
        if args.json:
            _print_json(
                {
                    "kind": args.kind,
                    "since": args.since,
                    "until": args.until,
                    "unit": config.unit,
                    "rows": result,
                }
            )
            return EXIT_OK
        print(f"{args.kind}, {window} ({config.unit})")
        if args.kind == "stats":
            stats = result
            rows = [
                ["calls", stats.calls],
                ["total", stats.total],
                ["distinct users", stats.distinct_users],
                ["distinct projects", stats.distinct_projects],
                ["mean per call", _dash(stats.mean)],
                ["min per call", _dash(stats.minimum)],
                ["max per call", _dash(stats.maximum)],
                *[
                    [f"p{p * 100:g} per call", _dash(v)]
                    for p, v in stats.percentiles.items()
                ],
                ["input tokens", stats.input_tokens],
                ["output tokens", stats.output_tokens],
            ]
            print_table(["measure", "value"], rows)
        elif args.kind == "daily":
            print_table(
                ["day", "calls", "users", "total"],
                [[d.day.isoformat(), d.calls, d.users, d.total] for d in result],
            )
        else:
            label = {"projects": "project", "models": "model"}.get(args.kind, "user")
            print_table(
                [label, "calls", "total", "input tokens", "output tokens"],
                [
                    [
                        _dash(g.key, "(none)"),
                        g.calls,
                        g.total,
                        g.input_tokens,
                        g.output_tokens,
                    ]
                    for g in result
                ],
            )
        return EXIT_OK

    return _run(body)


async def _report(analytics: Any, args: argparse.Namespace) -> Any:
    window = (args.since, args.until)
    if args.kind == "stats":
        return await analytics.stats(*window)
    if args.kind == "daily":
        rows = await analytics.daily_spend(*window)
        return rows[-args.limit :] if args.limit else rows
    if args.kind == "top-users":
        return await analytics.top_users(*window, limit=args.limit or 10)
    group = {"users": "user", "projects": "project", "models": "model"}[args.kind]
    return await analytics.spend_by(group, *window, limit=args.limit)


def run_reconcile(args: argparse.Namespace) -> int:
    async def body() -> int:
        from spendgate.ledger.reconcile import reconcile

        config = _config(args, needs_redis=True)
        report = await reconcile(config, args.day, progress=_Progress("reconcile"))
        if args.json:
            body = asdict(report)
            body["ok"] = report.ok
            for diff, raw in zip(report.differences, body["differences"], strict=True):
                raw["difference"] = diff.difference
            _print_json(body)
        else:
            print(
                f"reconcile {report.day.isoformat()}: {report.scopes_checked} scopes; "
                f"global counter {report.redis_total}, "
                f"Postgres {report.postgres_total}, "
                f"backlog {report.backlog_total} ({report.backlog_entries} entries) "
                f"{config.unit}"
            )
            if report.counters_expired:
                print(
                    "note: this day's counters are past their retention "
                    "(counter_retention_seconds) and may have expired"
                )
            if report.ok:
                print("no differences")
            else:
                print_table(
                    ["scope", "id", "redis", "postgres", "backlog", "difference"],
                    [
                        [
                            d.scope,
                            _dash(d.scope_id),
                            d.redis,
                            d.postgres,
                            d.backlog,
                            d.difference,
                        ]
                        for d in report.differences
                    ],
                )
        return EXIT_OK if report.ok else EXIT_FAILURE

    return _run(body)


# -- output --------------------------------------------------------------------------


def _dash(value: object, missing: str = "-") -> object:
    return missing if value is None else value


def printable(value: object) -> str:
    """``value`` as text that cannot break a line or a table."""
    text = str(value)
    if text.isprintable():
        return text
    # An id holding a newline or control character must not break the table.
    return text.encode("unicode_escape", "backslashreplace").decode("ascii")


def print_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Columns aligned; numbers right-aligned."""
    cells = [list(header)] + [[printable(c) for c in row] for row in rows]
    numeric = [
        bool(rows) and all(isinstance(row[i], int | Decimal) for row in rows)
        for i in range(len(header))
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        line = "  ".join(
            c.rjust(w) if num else c.ljust(w)
            for c, w, num in zip(row, widths, numeric, strict=True)
        )
        print(line.rstrip())
    if not rows:
        print("(no rows)")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _print_json(body: Any) -> None:
    print(json.dumps(_jsonable(body), indent=2, ensure_ascii=False))
