"""The prepaid credit commands: ``credits add|sweep``, ``balance``, ``refund``.

Like the other operator commands they work on the Redis in
``SPENDGATE_REDIS_URL`` and print text or, with ``--json``, JSON with
amounts as exact strings. A credit or a refund must reach the store now or
not at all: Redis is asked first, and a fact this short-lived process would
have to spool is reported as such (exit 4), never left silently behind.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import TYPE_CHECKING, Any

from spendgate.cli.printer import fail, print_json, print_table, printable, text_or_none
from spendgate.cli.runner import run_on_budget
from spendgate.errors import ExitCode, InvalidArgumentError

if TYPE_CHECKING:
    from spendgate.manager import BudgetManager
    from spendgate.models import Balance

    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

_AGAIN = "run the command again only with the same --idempotency-key"


def add_credits(sub: SubParsers) -> None:
    parser = sub.add_parser(
        "credits",
        help="grant prepaid credits, or sweep expired ones",
        description="Prepaid credits (balances are enforced when "
        "SPENDGATE_ENFORCE_BALANCE is true).",
    )
    actions = parser.add_subparsers(dest="credits_action", metavar="ACTION")
    actions.required = True
    add = actions.add_parser(
        "add",
        help="grant credits to a user (rounded down to the micro-unit)",
        description="Grant credits to a user (rounded down to the micro-unit): "
        "they pay its debt first, then charges draw on them in order (lower "
        "--priority, then the earliest --expires-at, never-expiring last, then "
        "the oldest).",
    )
    add.add_argument("user", help="the user id")
    add.add_argument("amount", help="the amount, e.g. 25 or 0.50")
    add.add_argument(
        "--expires-at",
        metavar="WHEN",
        help="when the grant stops counting, ISO 8601 with its offset "
        "(2026-04-01T00:00:00Z); left out: never",
    )
    add.add_argument("--priority", type=int, default=0, help="lower is drawn first")
    add.add_argument("--kind", default="purchase", help="purchase, promo, ...")
    add.add_argument(
        "--idempotency-key",
        help="run it again with the same key and nothing is added twice",
    )
    add.add_argument("--json", action="store_true", help="print JSON instead of text")
    add.set_defaults(handler=run_credits_add)
    sweep = actions.add_parser(
        "sweep",
        help="expire what expired grants have left (one expire entry each)",
        description="Expire what every grant whose expiry passed has left, with "
        "one expire ledger entry each, written once whoever else sweeps. Not "
        "needed for correctness: a grant stops counting at its expiry.",
    )
    sweep.add_argument(
        "--dry-run", action="store_true", help="count what would expire, change nothing"
    )
    sweep.add_argument("--json", action="store_true", help="print JSON instead of text")
    sweep.set_defaults(handler=run_credits_sweep)


def add_balance(sub: SubParsers) -> None:
    parser = sub.add_parser(
        "balance",
        help="show a user's prepaid balance and grants",
        description="Show a user's balance (enforced or not), what leases hold, "
        "and its live grants in the order charges draw on them.",
    )
    parser.add_argument("user", help="the user id")
    parser.add_argument("--json", action="store_true", help="print JSON instead")
    parser.set_defaults(handler=run_balance)


def add_refund(sub: SubParsers) -> None:
    parser = sub.add_parser(
        "refund",
        help="give back all or part of a charge",
        description="Give back all (no --amount) or part of a charge, by its "
        "entry id: its day's and month's counters go down, the money goes back "
        "to the grants and balance it came from (a team charge's, whose id "
        "ends in .<team>: to the team's pool).",
    )
    parser.add_argument("entry", help="the charge's entry id")
    parser.add_argument("--amount", help="how much; left out: all that is left")
    parser.add_argument("--reason", help="kept on the ledger entry")
    parser.add_argument(
        "--idempotency-key",
        help="run it again with the same key and nothing is refunded twice",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead")
    parser.set_defaults(handler=run_refund)


def run_credits_add(args: argparse.Namespace) -> int:
    async def work(budget: BudgetManager) -> int:
        _require_a_credit(args.amount)
        expires_at = _instant(args.expires_at)
        # Redis is asked first, so an unreachable store changes nothing (the
        # ping raises: exit 4).
        await budget.redis.ping()
        rec = await budget.add_credits(
            args.user,
            args.amount,
            idempotency_key=args.idempotency_key,
            expires_at=expires_at,
            priority=args.priority,
            kind=args.kind,
        )
        unit = budget.config.unit
        if args.json:
            print_json(
                {
                    "entry_id": rec.entry_id,
                    "user_id": rec.user_id,
                    "amount": str(rec.amount),
                    "balance": text_or_none(rec.balance),
                    "replayed": rec.replayed,
                    "spooled": rec.spooled,
                }
            )
        elif rec.replayed:
            print(f"already added (same key): balance {rec.balance} {unit}")
        elif not rec.spooled:
            who = printable(rec.user_id)
            print(f"added {rec.amount} {unit}: balance of {who} {rec.balance}")
        if rec.spooled:
            return _spooled(budget, f"the credit of {rec.amount} {unit}", rec.entry_id)
        if not args.json:
            print(f"entry {printable(rec.entry_id)}")
        return ExitCode.OK

    return run_on_budget(work)


def run_credits_sweep(args: argparse.Namespace) -> int:
    async def work(budget: BudgetManager) -> int:
        report = await budget.sweep_expired_credits(dry_run=args.dry_run)
        if args.json:
            print_json(
                {
                    "dry_run": report.dry_run,
                    "count": report.count,
                    "amount": str(report.amount),
                }
            )
        else:
            verb = "would expire" if report.dry_run else "expired"
            print(f"{verb} {report.count} grants: {report.amount} {budget.config.unit}")
        return ExitCode.OK

    return run_on_budget(work)


def run_balance(args: argparse.Namespace) -> int:
    async def work(budget: BudgetManager) -> int:
        balance = await budget.get_balance(args.user)
        if args.json:
            print_json(_balance_json(args.user, budget.config.unit, balance))
            return ExitCode.OK
        unit, who = budget.config.unit, printable(args.user)
        print(
            f"balance of user {who}: {balance.total} {unit} (available "
            f"{balance.available}, held {balance.held})"
        )
        if balance.grants:
            print_table(
                ["grant", "kind", "remaining", "expires", "priority"],
                [
                    [
                        g.id,
                        printable(g.kind),
                        str(g.remaining),
                        g.expires_at.isoformat() if g.expires_at else "never",
                        g.priority,
                    ]
                    for g in balance.grants
                ],
            )
        return ExitCode.OK

    return run_on_budget(work)


def run_refund(args: argparse.Namespace) -> int:
    async def work(budget: BudgetManager) -> int:
        await budget.redis.ping()  # (as credits add: now or not at all)
        result = await budget.refund(
            args.entry,
            args.amount,
            reason=args.reason,
            idempotency_key=args.idempotency_key,
        )
        if result.spooled:
            return _spooled(budget, f"the refund of {args.entry}", result.entry_id)
        if args.json:
            print_json(
                {
                    "entry_id": result.entry_id,
                    "charge_id": result.charge_id,
                    "refunded": text_or_none(result.refunded),
                    "refundable_left": text_or_none(result.refundable_left),
                    "balance_after": text_or_none(result.balance_after),
                    "team_id": result.team_id,
                    "replayed": result.replayed,
                }
            )
            return ExitCode.OK
        again = "already refunded (same key): " if result.replayed else ""
        print(
            f"{again}refunded {result.refunded} {budget.config.unit} of "
            f"{printable(result.charge_id)}; {result.refundable_left} left to refund"
        )
        if result.team_id is not None:
            after = result.balance_after
            pool = "" if after is None else f": balance {after}"
            print(f"back to the pool of team {printable(result.team_id)}{pool}")
        elif result.balance_after is not None:
            print(f"balance {result.balance_after}")
        print(f"entry {printable(result.entry_id)}")
        return ExitCode.OK

    return run_on_budget(work)


def _balance_json(user: str, unit: str, balance: Balance) -> dict[str, Any]:
    return {
        "user_id": user,
        "unit": unit,
        "total": str(balance.total),
        "available": str(balance.available),
        "held": str(balance.held),
        "grants": [
            {
                "id": g.id,
                "kind": g.kind,
                "remaining": str(g.remaining),
                "expires_at": g.expires_at.isoformat() if g.expires_at else None,
                "priority": g.priority,
                "created_at": g.created_at.isoformat(),
            }
            for g in balance.grants
        ],
    }


def _instant(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidArgumentError(f"--expires-at {text!r} is not ISO 8601") from None
    if moment.tzinfo is None:
        raise InvalidArgumentError("--expires-at needs its offset (e.g. Z or +00:00)")
    return moment


def _require_a_credit(amount: str) -> None:
    """Refuse an amount that would add nothing: 0, or less than a micro-unit
    (credits round down). Other invalid amounts raise as they always did."""
    from spendgate.core.money import credit_micros
    from spendgate.errors import InvalidAmountError

    if credit_micros(amount) == 0:
        raise InvalidAmountError(
            amount, "a credit must be at least 0.000001 (credits round down)"
        )


def _spooled(budget: BudgetManager, what: str, entry: str) -> int:
    # Redis answered the ping, then not the fact: it is durable in the local
    # spool, not in the store. Say so, and exit "unavailable".
    spool = budget.spool
    where = "the local spool" if spool is None else str(spool.directory)
    return fail(
        f"Redis stopped answering: {what} (entry {entry}) is spooled in {where} "
        f"and is applied when a spendgate process using that spool reaches Redis; "
        f"{_AGAIN}",
        ExitCode.UNAVAILABLE,
    )
