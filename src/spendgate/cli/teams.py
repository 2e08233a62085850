"""The team commands: ``teams create|show|add-member|remove-member|credit``.

Like the other operator commands they work on the Redis in
``SPENDGATE_REDIS_URL`` and print text or, with ``--json``, JSON with
amounts as exact strings. A credit must reach the store now or not at all
(as ``credits add``): Redis is asked first, and a credit this short-lived
process would have to spool is reported as such (exit 4).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from spendgate.cli.credits import _require_a_credit, _spooled
from spendgate.cli.printer import print_json, print_table, printable, text_or_none
from spendgate.cli.runner import run_on_budget
from spendgate.errors import ExitCode

if TYPE_CHECKING:
    from spendgate.manager import BudgetManager
    from spendgate.teams import Team

    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def add_teams(sub: SubParsers) -> None:
    parser = sub.add_parser(
        "teams",
        help="teams: a shared pool, members with caps on it",
        description="Teams: a shared pool that members charge (team_id= on "
        "reserve, record_spend and deduct), each member with their own daily "
        "and monthly caps on it.",
    )
    actions = parser.add_subparsers(dest="teams_action", metavar="ACTION")
    actions.required = True
    create = actions.add_parser("create", help="make a team and its pool")
    create.add_argument("team", help="the team id")
    create.add_argument("--name", help="a display name")
    create.add_argument(
        "--initial-balance", default="0", metavar="AMOUNT", help="the pool's balance"
    )
    show = actions.add_parser("show", help="the pool and the members")
    show.add_argument("team", help="the team id")
    member = actions.add_parser(
        "add-member",
        help="add a member, or change a member's role and caps",
        description="Add a member, or change a member's role and caps (left "
        "out: no cap). The member's own user caps hold as well.",
    )
    member.add_argument("team", help="the team id")
    member.add_argument("user", help="the user id")
    member.add_argument("--role", default="member", help="member, admin, ...")
    member.add_argument("--daily-cap", metavar="AMOUNT", help="per day on the pool")
    member.add_argument("--monthly-cap", metavar="AMOUNT", help="per month on it")
    remove = actions.add_parser(
        "remove-member", help="remove a member: their next charge is refused"
    )
    remove.add_argument("team", help="the team id")
    remove.add_argument("user", help="the user id")
    credit = actions.add_parser(
        "credit", help="add credits to the pool (rounded down to the micro-unit)"
    )
    credit.add_argument("team", help="the team id")
    credit.add_argument("amount", help="the amount, e.g. 25 or 0.50")
    credit.add_argument(
        "--idempotency-key",
        help="run it again with the same key and nothing is added twice",
    )
    for action in (create, show, member, remove, credit):
        action.add_argument("--json", action="store_true", help="print JSON instead")
    create.set_defaults(handler=run_create)
    show.set_defaults(handler=run_show)
    member.set_defaults(handler=run_add_member)
    remove.set_defaults(handler=run_remove_member)
    credit.set_defaults(handler=run_credit)


def run_create(args: argparse.Namespace) -> int:
    async def work(budget: BudgetManager) -> int:
        team = await budget.create_team(args.team, args.name, args.initial_balance)
        if args.json:
            print_json(_team_json(team, budget.config.unit))
        else:
            print(
                f"created team {printable(team.team_id)}: balance {team.balance} "
                f"{budget.config.unit}"
            )
        return ExitCode.OK

    return run_on_budget(work)


def run_show(args: argparse.Namespace) -> int:
    async def work(budget: BudgetManager) -> int:
        team = await budget.get_team(args.team)
        unit = budget.config.unit
        if args.json:
            print_json(_team_json(team, unit))
            return ExitCode.OK
        name = f" ({printable(team.name)})" if team.name else ""
        print(
            f"team {printable(team.team_id)}{name}: balance {team.balance} {unit} "
            f"(available {team.available}, held {team.held})"
        )
        if team.members:
            print_table(
                ["member", "role", "daily cap", "monthly cap", "today", "month"]
                + ["held"],
                [
                    [
                        printable(m.user_id),
                        printable(m.role),
                        "-" if m.daily_cap is None else str(m.daily_cap),
                        "-" if m.monthly_cap is None else str(m.monthly_cap),
                        str(m.spent_today),
                        str(m.spent_this_month),
                        str(m.held),
                    ]
                    for _, m in sorted(team.members.items())
                ],
            )
        return ExitCode.OK

    return run_on_budget(work)


def run_add_member(args: argparse.Namespace) -> int:
    async def work(budget: BudgetManager) -> int:
        added = await budget.add_team_member(
            args.team, args.user, args.role, args.daily_cap, args.monthly_cap
        )
        status = "added" if added else "updated"
        if args.json:
            print_json({"status": status, "team_id": args.team, "user_id": args.user})
        else:
            print(f"{status} {printable(args.user)} in team {printable(args.team)}")
        return ExitCode.OK

    return run_on_budget(work)


def run_remove_member(args: argparse.Namespace) -> int:
    async def work(budget: BudgetManager) -> int:
        await budget.remove_team_member(args.team, args.user)
        if args.json:
            print_json(
                {"status": "removed", "team_id": args.team, "user_id": args.user}
            )
        else:
            print(f"removed {printable(args.user)} from team {printable(args.team)}")
        return ExitCode.OK

    return run_on_budget(work)


def run_credit(args: argparse.Namespace) -> int:
    async def work(budget: BudgetManager) -> int:
        _require_a_credit(args.amount)
        await budget.redis.ping()  # (as credits add: now or not at all)
        rec = await budget.credit_team(
            args.team, args.amount, idempotency_key=args.idempotency_key
        )
        unit = budget.config.unit
        if rec.spooled:
            return _spooled(budget, f"the credit of {rec.amount} {unit}", rec.entry_id)
        if args.json:
            print_json(
                {
                    "entry_id": rec.entry_id,
                    "team_id": args.team,
                    "amount": str(rec.amount),
                    "balance": text_or_none(rec.balance),
                    "replayed": rec.replayed,
                }
            )
            return ExitCode.OK
        again = "already added (same key): " if rec.replayed else "added "
        print(f"{again}{rec.amount} {unit}: balance of team {rec.balance}")
        print(f"entry {printable(rec.entry_id)}")
        return ExitCode.OK

    return run_on_budget(work)


def _team_json(team: Team, unit: str) -> dict[str, Any]:
    return {
        "team_id": team.team_id,
        "name": team.name,
        "created_at": team.created_at.isoformat(),
        "unit": unit,
        "balance": str(team.balance),
        "held": str(team.held),
        "available": str(team.available),
        "members": [
            {
                "user_id": m.user_id,
                "role": m.role,
                "daily_cap": text_or_none(m.daily_cap),
                "monthly_cap": text_or_none(m.monthly_cap),
                "spent_today": str(m.spent_today),
                "spent_this_month": str(m.spent_this_month),
                "held": str(m.held),
            }
            for _, m in sorted(team.members.items())
        ],
    }
