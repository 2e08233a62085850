"""``spendgate report``: spend analytics from the Postgres ledger.

Registered by :mod:`spendgate.cli`; asyncpg (through
:class:`~spendgate.ledger.analytics.Analytics`) is imported only when the
command runs. Exit codes: 0 success; 2 usage or settings error (a bad
window, ``--limit`` or ``--team``); 4 Postgres unavailable.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from spendgate.cli.arguments import moment
from spendgate.cli.ledger import dsn_option
from spendgate.cli.printer import dash, print_json, print_table, printable
from spendgate.cli.runner import UsageError, run, settings
from spendgate.core.ids import check_id
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
    "teams": "spend on each team's pool, largest first",
    "team-members": "spend per (team, member) on the teams' pools, largest first "
    "(--team: one team's members)",
}


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
        "--team", help="team-members: only this team's members (default: every team)"
    )
    parser.add_argument(
        "--json", action="store_true", help="print JSON instead of a table"
    )
    dsn_option(parser)
    parser.set_defaults(handler=run_report)


def run_report(args: argparse.Namespace) -> int:
    async def body() -> int:
        from spendgate.ledger.analytics import Analytics

        config = settings(args, needs_postgres=True)
        if args.limit is not None and args.limit < 1:
            raise UsageError("--limit must be at least 1")
        if args.team is not None:
            if args.kind != "team-members":
                raise UsageError("--team goes with the team-members report")
            check_id("team_id", args.team, config.max_id_length)
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
    if args.kind == "teams":
        return await analytics.spend_by_team(*window, limit=args.limit)
    if args.kind == "team-members":
        return await analytics.spend_by_team_member(
            args.team, *window, limit=args.limit
        )
    group = {"users": "user", "projects": "project", "models": "model"}[args.kind]
    return await analytics.spend_by(group, *window, limit=args.limit)


#: the reports of rows, each a table: kind -> its headers, and a row's cells
_TABLES: dict[str, tuple[list[str], Callable[[Any], list[Any]]]] = {
    "credits": (
        ["user", "granted", "expired", "spent", "allowance", "net"],
        lambda f: (
            [printable(f.user_id), f.granted, f.expired, f.spent, f.allowance, f.net]
        ),
    ),
    "team-members": (
        ["team", "user", "calls", "total", "refunded", "input tokens", "output tokens"],
        lambda m: (
            [printable(m.team_id), printable(m.user_id), m.calls, m.total, m.refunded]
            + [m.input_tokens, m.output_tokens]
        ),
    ),
    "daily": (
        ["day", "calls", "users", "total", "allowance"],
        lambda d: [d.day.isoformat(), d.calls, d.users, d.total, d.allowance],
    ),
}

#: the grouped reports' first column
_GROUP_LABELS = {"projects": "project", "models": "model", "teams": "team"}


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
        return
    if kind in _TABLES:
        headers, cells = _TABLES[kind]
        print_table(headers, [cells(row) for row in result])
        return
    label = _GROUP_LABELS.get(kind, "user")
    print_table(
        [label, "calls", "total", "allowance", "input tokens", "output tokens"],
        [
            [dash(g.key, "(none)"), g.calls, g.total, g.allowance]
            + [g.input_tokens, g.output_tokens]
            for g in result
        ],
    )
