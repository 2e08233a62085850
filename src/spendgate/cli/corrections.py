"""``spendgate adjust`` and ``spendgate transactions``.

``adjust`` corrects one counter on the Redis in ``SPENDGATE_REDIS_URL`` (an
``adjust`` ledger entry records it); ``transactions`` lists a user's ledger
entries, from Postgres when ``SPENDGATE_POSTGRES_DSN`` is set, else from the
Redis ledger stream. Both print a table, or JSON with ``--json`` (amounts as
exact strings).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from spendgate.cli.arguments import day_or_moment, moment, takes_negative_numbers
from spendgate.cli.printer import dash, fail, print_json, print_table, printable
from spendgate.cli.runner import run, run_on_budget, settings
from spendgate.errors import ExitCode

if TYPE_CHECKING:
    from spendgate.corrections import Adjustment, Transaction
    from spendgate.manager import BudgetManager

    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def add_adjust(sub: SubParsers) -> None:
    parser = sub.add_parser(
        "adjust",
        help="correct a scope's daily or monthly spent counter, up or down",
        description="Move one counter (a user's, a project's or the global "
        "spent in a day or a month) up or down, with an 'adjust' ledger entry. "
        "A lowering stops at zero; the output says what was applied.",
    )
    parser.add_argument(
        "scope", choices=("user", "project", "global"), help="user, project or global"
    )
    parser.add_argument("id", help="the user or project id (for global: anything, '-')")
    parser.add_argument("amount", help="signed: 2.5 raises the counter, -2.5 lowers it")
    parser.add_argument(
        "--window",
        choices=("daily", "monthly"),
        default="daily",
        help="the counter to correct (default: %(default)s)",
    )
    parser.add_argument(
        "--at",
        type=day_or_moment,
        help="a day (YYYY-MM-DD, of the window time zone) or instant in the "
        "window to correct (default: the current one)",
    )
    parser.add_argument("--reason", help="kept in the ledger entry's metadata")
    parser.add_argument(
        "--idempotency-key",
        help="run it again with the same key and nothing is applied twice",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead")
    takes_negative_numbers(parser)  # (-1e-3 is a lowering, not an option)
    parser.set_defaults(handler=run_adjust)


def add_transactions(sub: SubParsers) -> None:
    parser = sub.add_parser(
        "transactions",
        help="list a user's ledger entries, newest first",
        description="A user's charges, refunds, grants, expiries and adjustments, "
        "newest first: from Postgres when SPENDGATE_POSTGRES_DSN is set (what the "
        "flusher has moved), else from the Redis ledger stream (its newest "
        "entries).",
    )
    parser.add_argument("user", help="the user id")
    parser.add_argument(
        "--since", type=moment, help="from this day or instant on, inclusive"
    )
    parser.add_argument("--until", type=moment, help="before this, exclusive")
    parser.add_argument(
        "--limit",
        type=int,
        default=100,
        help="at most this many, 1 to 1000 (default: %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead")
    parser.set_defaults(handler=run_transactions)


def run_adjust(args: argparse.Namespace) -> int:
    async def work(budget: BudgetManager) -> int:
        # An operator's correction must reach the store now or not at all (a
        # spooled one would wait for a later process): Redis is asked first.
        await budget.redis.ping()
        done = await budget.adjust_usage(
            args.scope,
            args.id,
            args.amount,
            args.window,
            args.reason,
            args.idempotency_key,
            at=args.at,
        )
        if done.spooled:
            return fail(
                f"Redis stopped answering: the correction (entry {done.entry_id}) is "
                "spooled and is applied when a spendgate process using that spool "
                "reaches Redis; run it again only with the same --idempotency-key",
                ExitCode.UNAVAILABLE,
            )
        if args.json:
            print_json(done)
        else:
            _print_adjustment(done, budget.config.unit)
        return ExitCode.OK

    return run_on_budget(work)


def _print_adjustment(done: Adjustment, unit: str) -> None:
    who = (
        done.scope
        if done.scope_id is None
        else f"{done.scope} {printable(done.scope_id)}"
    )
    if done.replayed:
        print("already applied (same key):")
    print(
        f"{who}, {done.window} {done.period}: applied {done.applied} {unit} "
        f"(asked {done.requested}); counter now {done.spent_after}"
    )
    print(f"entry {printable(done.entry_id)}")


def run_transactions(args: argparse.Namespace) -> int:
    async def body() -> int:
        from spendgate.manager import BudgetManager
        from spendgate.ops.transactions import postgres_transactions

        config = settings()
        window = (args.user, args.since, args.until, args.limit)
        if config.postgres_dsn:
            # (no manager: Postgres alone is read, no Redis is needed)
            found = await postgres_transactions(
                config.postgres_dsn, *window, max_id_length=config.max_id_length
            )
        else:
            # the stream, then: the deployment's Redis, never the embedded one
            config = settings(needs_redis=True)
            async with BudgetManager(config) as budget:
                found = await budget.list_transactions(*window)
        source = "postgres" if config.postgres_dsn else "stream"
        if args.json:
            print_json(
                {
                    "user_id": args.user,
                    "source": source,
                    "unit": config.unit,
                    "transactions": found,
                }
            )
        else:
            who = printable(args.user)
            print(f"transactions of {who} ({config.unit}, from the {source})")
            _print_transactions(found)
        return ExitCode.OK

    return run(body)


def _print_transactions(found: list[Transaction]) -> None:
    print_table(
        ["occurred at", "kind", "amount", "project", "model", "link", "entry"],
        [
            [
                t.occurred_at.isoformat(timespec="milliseconds"),
                t.kind,
                t.amount,
                dash(t.project_id),
                dash(t.model),
                dash(t.link_id or t.grant_id or t.window),
                t.entry_id,
            ]
            for t in found
        ],
    )
