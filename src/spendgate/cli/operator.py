"""The operator commands: ``usage``, ``limits get|set|clear`` (``credits``,
``balance`` and ``refund`` are :mod:`spendgate.cli.credits`').

They work on the Redis in ``SPENDGATE_REDIS_URL`` through a
``BudgetManager`` (never on the embedded store, which would report or change
nothing real), and print a table or, with ``--json``, JSON with amounts as
exact strings.

Caps on the command line, one spelling each: an amount sets a cap, the word
``none`` (any case) means no cap, an option left out leaves that cap
unchanged, and ``limits clear`` drops the overrides (back to the defaults).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from spendgate.cli.printer import (
    dash,
    fail,
    print_json,
    print_table,
    printable,
    text_or_none,
)
from spendgate.cli.runner import run_on_budget
from spendgate.errors import ExitCode

if TYPE_CHECKING:
    from spendgate.manager import BudgetManager
    from spendgate.models import Limits, ScopeUsage

    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

#: the scopes limits can be set on
SCOPES = ("user", "project", "global")
#: the windows a cap is set for
WINDOWS = ("daily", "monthly")
#: the one word for "no cap" on the command line
NO_CAP = "none"
#: what a table shows for a window without a cap
NO_CAP_TEXT = "no cap"

_LIMITS_EPILOG = (
    f"Caps: an amount sets the cap; '{NO_CAP}' means no cap; an option left out "
    "leaves that cap unchanged; 'limits clear' drops the overrides, back to the "
    "configured defaults."
)


def add_usage(sub: SubParsers) -> None:
    parser = sub.add_parser(
        "usage",
        help="show a user's spend, holds, caps and balance",
        description="Show spent, held, cap, remaining and reset time per scope and "
        "window for one user (and a project), from the Redis in SPENDGATE_REDIS_URL.",
    )
    parser.add_argument("user", help="the user id")
    parser.add_argument("--project", help="also show this project")
    _json_option(parser)
    parser.set_defaults(handler=run_usage)


def add_limits(sub: SubParsers) -> None:
    parser = sub.add_parser(
        "limits",
        help="show, set or clear per-entity daily and monthly caps",
        description="Per-entity cap overrides, effective on the next call "
        "(no restart).",
        epilog=_LIMITS_EPILOG,
    )
    actions = parser.add_subparsers(dest="limits_action", metavar="ACTION")
    actions.required = True
    for name, text in (
        ("get", "show the caps in force for one entity"),
        ("set", "override an entity's caps"),
        ("clear", "drop an entity's overrides (back to the configured defaults)"),
    ):
        action = actions.add_parser(
            name, help=text, description=text, epilog=_LIMITS_EPILOG
        )
        action.add_argument("scope", choices=SCOPES, help="user, project or global")
        action.add_argument(
            "id", nargs="?", help="the user or project id (not for global)"
        )
        if name == "set":
            for window in WINDOWS:
                action.add_argument(
                    f"--{window}",
                    metavar="AMOUNT",
                    help=f"the {window} cap: an amount, or '{NO_CAP}' for no cap; "
                    "left out: unchanged",
                )
        _json_option(action)
        action.set_defaults(handler=run_limits)


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print JSON instead of a table"
    )


# -- usage -------------------------------------------------------------------------


def run_usage(args: argparse.Namespace) -> int:
    async def work(budget: BudgetManager) -> int:
        scopes = await budget.get_usage(args.user, args.project)
        if args.json:
            print_json(
                {
                    "user_id": args.user,
                    "project_id": args.project,
                    "unit": budget.config.unit,
                    "scopes": {name: _scope_json(s) for name, s in scopes.items()},
                }
            )
            return ExitCode.OK
        print_table(
            ["scope", "id", "window", "spent", "held", "limit", "remaining", "resets"],
            [_usage_row(name, s, w) for name, s in scopes.items() for w in WINDOWS],
        )
        balance = scopes["user"].balance
        if balance is not None:
            who = printable(args.user)
            print(f"balance of user {who}: {balance} {budget.config.unit}")
        return ExitCode.OK

    return run_on_budget(work)


def _usage_row(name: str, usage: ScopeUsage, window: str) -> list[object]:
    w = getattr(usage, window)
    return [
        name,
        dash(usage.scope_id),
        window,
        str(w.spent),
        str(w.held),
        str(dash(w.limit, NO_CAP_TEXT)),
        str(dash(w.remaining)),
        w.resets_at.strftime("%Y-%m-%d %H:%M UTC"),
    ]


def _scope_json(usage: ScopeUsage) -> dict[str, Any]:
    def window(w: Any) -> dict[str, Any]:
        return {
            "spent": str(w.spent),
            "held": str(w.held),
            "limit": text_or_none(w.limit),
            "remaining": text_or_none(w.remaining),
            "resets_at": w.resets_at.isoformat(),
        }

    return {
        "scope_id": usage.scope_id,
        "held": str(usage.held),
        "balance": text_or_none(usage.balance),
        "daily": window(usage.daily),
        "monthly": window(usage.monthly),
    }


# -- limits ------------------------------------------------------------------------


def run_limits(args: argparse.Namespace) -> int:
    if args.scope != "global" and not args.id:
        return fail(f"an id is needed for scope {args.scope}", ExitCode.USAGE)
    if args.scope == "global" and args.id is not None:
        # There is one global scope: an id would be silently ignored.
        return fail(f"scope global takes no id (got {args.id!r})", ExitCode.USAGE)
    if args.limits_action == "set" and args.daily is None and args.monthly is None:
        return fail("give --daily and/or --monthly", ExitCode.USAGE)

    async def work(budget: BudgetManager) -> int:
        if args.limits_action == "clear":
            limits = await budget.clear_limits(args.scope, args.id)
        else:
            limits = await budget.set_limits(args.scope, args.id, **_cap_changes(args))
        _print_limits(limits, as_json=args.json)
        return ExitCode.OK

    return run_on_budget(work)


def _cap_changes(args: argparse.Namespace) -> dict[str, Any]:
    """``set_limits``' keyword arguments: a window left out stays ``UNSET``."""
    from spendgate.manager import UNSET

    changes: dict[str, Any] = {window: UNSET for window in WINDOWS}
    if args.limits_action == "set":
        for window in WINDOWS:
            value = getattr(args, window)
            if value is not None:
                no_cap = value.strip().lower() == NO_CAP
                changes[window] = None if no_cap else value
    return changes


def _print_limits(limits: Limits, *, as_json: bool) -> None:
    if as_json:
        print_json(
            {
                "scope": limits.scope,
                "scope_id": limits.scope_id,
                "daily": text_or_none(limits.daily),
                "monthly": text_or_none(limits.monthly),
                "overridden": sorted(limits.overridden),
            }
        )
        return
    rows = [
        [
            limits.scope,
            dash(limits.scope_id),
            window,
            str(dash(getattr(limits, window), NO_CAP_TEXT)),
            "override" if window in limits.overridden else "default",
        ]
        for window in WINDOWS
    ]
    print_table(["scope", "id", "window", "limit", "source"], rows)
