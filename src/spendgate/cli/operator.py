"""The operator commands: ``usage``, ``limits get|set|clear`` (``credits``,
``balance`` and ``refund`` are :mod:`spendgate.cli.credits`').

They work on the Redis in ``SPENDGATE_REDIS_URL`` through a
``BudgetManager`` (never on the embedded store, which would report or change
nothing real), and print a table or, with ``--json``, JSON with amounts as
exact strings.

Caps on the command line, one spelling each: an amount sets a cap, the word
``none`` (any case) means no cap, an option left out leaves that cap
unchanged, and ``limits clear`` drops the overrides (back to the defaults).
``--weekly`` needs weekly counters on in the deployment
(``SPENDGATE_WEEKLY_CAPS`` or a weekly default), ``--per-minute`` needs
``SPENDGATE_PER_MINUTE_CAPS``, ``--action`` (``deny``, ``warn``, ``notify``,
or ``none`` to drop it) and ``--thresholds`` (``0.5,0.8,0.95``) need
``SPENDGATE_CAP_ACTIONS``.
``--model`` (``usage``, ``limits``) works on one model's caps and spend
in the scope (daily and monthly), and needs ``SPENDGATE_MODEL_CAPS``.
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
#: the calendar windows every deployment has
WINDOWS = ("daily", "monthly")
#: the windows a cap is set for (``set_limits``' keywords), in table order
CAP_WINDOWS = ("daily", "weekly", "monthly", "per_minute")
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
    _model_option(parser, "also show this model's spend and per-model caps")
    _json_option(parser)
    parser.set_defaults(handler=run_usage)


def add_limits(sub: SubParsers) -> None:
    parser = sub.add_parser(
        "limits",
        help="show, set or clear per-entity caps (daily, weekly, monthly, per minute)",
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
        _model_option(action, "that model's caps in the scope (daily, monthly)")
        if name == "set":
            for window in CAP_WINDOWS:
                action.add_argument(
                    "--" + window.replace("_", "-"),
                    dest=window,
                    metavar="AMOUNT",
                    help=f"the {window.replace('_', '-')} cap: an amount, or "
                    f"'{NO_CAP}' for no cap; left out: unchanged",
                )
            action.add_argument(
                "--action",
                dest="cap_action",
                choices=("deny", "warn", "notify", NO_CAP),
                help="what the daily and monthly caps do when reached (needs "
                f"cap_actions on); '{NO_CAP}' drops it; left out: unchanged",
            )
            action.add_argument(
                "--thresholds",
                metavar="FRACTIONS",
                help="with --action: the fractions of the cap whose crossing is "
                "an event, comma-separated (0.5,0.8,0.95); left out: the "
                "action's default",
            )
        _json_option(action)
        action.set_defaults(handler=run_limits)


def _model_option(parser: argparse.ArgumentParser, text: str) -> None:
    parser.add_argument(
        "--model", help=f"{text} (needs SPENDGATE_MODEL_CAPS)", metavar="MODEL"
    )


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print JSON instead of a table"
    )


# -- usage -------------------------------------------------------------------------


def run_usage(args: argparse.Namespace) -> int:
    async def work(budget: BudgetManager) -> int:
        scopes = await budget.get_usage(args.user, args.project, model=args.model)
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
            [
                _usage_row(name, s, w)
                for name, s in scopes.items()
                for w in ("daily", "weekly", "monthly", "minute")
                if getattr(s, w) is not None
            ]
            + [
                _usage_row(name, s, w, model=True)
                for name, s in scopes.items()
                if s.model is not None
                for w in WINDOWS
            ],
        )
        for name, s in scopes.items():
            if s.kill_switch_until is not None:
                who = printable(f"{name} {dash(s.scope_id, '')}".strip())
                until = s.kill_switch_until.strftime("%Y-%m-%d %H:%M:%S UTC")
                print(f"kill switch: {who} refused until {until}")
        balance = scopes["user"].balance
        if balance is not None:
            who = printable(args.user)
            print(f"balance of user {who}: {balance} {budget.config.unit}")
        return ExitCode.OK

    return run_on_budget(work)


def _usage_row(
    name: str, usage: ScopeUsage, window: str, *, model: bool = False
) -> list[object]:
    """One window's row; ``model``: the window of the model asked for
    (named "<model> <window>")."""
    w = getattr(usage.model if model else usage, window)
    return [
        name,
        dash(usage.scope_id),
        printable(f"{usage.model.model} {window}") if usage.model and model else window,
        str(w.spent),
        str(w.held),
        str(dash(w.limit, NO_CAP_TEXT)),
        str(dash(w.remaining)),
        w.resets_at.strftime(
            "%Y-%m-%d %H:%M:%S UTC" if window == "minute" else "%Y-%m-%d %H:%M UTC"
        ),
    ]


def _scope_json(usage: ScopeUsage) -> dict[str, Any]:
    def window(w: Any) -> dict[str, Any] | None:
        if w is None:
            return None
        return {
            "spent": str(w.spent),
            "held": str(w.held),
            "limit": text_or_none(w.limit),
            "remaining": text_or_none(w.remaining),
            "resets_at": w.resets_at.isoformat(),
        }

    until = usage.kill_switch_until
    return {
        "scope_id": usage.scope_id,
        "held": str(usage.held),
        "balance": text_or_none(usage.balance),
        "daily": window(usage.daily),
        "monthly": window(usage.monthly),
        "weekly": window(usage.weekly),
        "minute": window(usage.minute),
        "kill_switch_until": None if until is None else until.isoformat(),
        "model": None
        if usage.model is None
        else {
            "model": usage.model.model,
            "held": str(usage.model.held),
            "daily": window(usage.model.daily),
            "monthly": window(usage.model.monthly),
        },
    }


# -- limits ------------------------------------------------------------------------


def run_limits(args: argparse.Namespace) -> int:
    if args.scope != "global" and not args.id:
        return fail(f"an id is needed for scope {args.scope}", ExitCode.USAGE)
    if args.scope == "global" and args.id is not None:
        # There is one global scope: an id would be silently ignored.
        return fail(f"scope global takes no id (got {args.id!r})", ExitCode.USAGE)
    if args.limits_action == "set" and args.thresholds and args.cap_action is None:
        return fail("--thresholds are set with --action", ExitCode.USAGE)
    if (
        args.limits_action == "set"
        and all(getattr(args, window) is None for window in CAP_WINDOWS)
        and args.cap_action is None
    ):
        return fail(
            "give --daily, --weekly, --monthly, --per-minute and/or --action",
            ExitCode.USAGE,
        )
    model = args.model

    async def work(budget: BudgetManager) -> int:
        if args.limits_action == "clear":
            limits = await budget.clear_limits(args.scope, args.id, model=model)
        else:
            changes = _cap_changes(args)
            limits = await budget.set_limits(
                args.scope, args.id, model=model, **changes
            )
        shown = [
            window
            for window in CAP_WINDOWS
            if window in WINDOWS
            or (model is None and window == "weekly" and budget.config.weekly_enabled)
            or (
                model is None
                and window == "per_minute"
                and budget.config.per_minute_enabled
            )
        ]
        _print_limits(limits, shown, as_json=args.json)
        return ExitCode.OK

    return run_on_budget(work)


def _cap_changes(args: argparse.Namespace) -> dict[str, Any]:
    """``set_limits``' keyword arguments: a window left out stays ``UNSET``."""
    from spendgate.manager import UNSET

    changes: dict[str, Any] = {window: UNSET for window in CAP_WINDOWS}
    if args.limits_action == "set":
        for window in CAP_WINDOWS:
            value = getattr(args, window)
            if value is not None:
                no_cap = value.strip().lower() == NO_CAP
                changes[window] = None if no_cap else value
        if args.cap_action is not None:
            changes["action"] = None if args.cap_action == NO_CAP else args.cap_action
            if args.thresholds:
                changes["thresholds"] = [
                    part.strip() for part in args.thresholds.split(",")
                ]
    return changes


def _print_limits(limits: Limits, shown: list[str], *, as_json: bool) -> None:
    """The caps in force; the table shows the windows in ``shown`` (those
    the deployment counts), the JSON every window (``null``: no cap)."""
    if as_json:
        print_json(
            {
                "scope": limits.scope,
                "scope_id": limits.scope_id,
                **{w: text_or_none(getattr(limits, w)) for w in CAP_WINDOWS},
                "overridden": sorted(limits.overridden),
                "action": limits.action,
                "thresholds": [str(t) for t in limits.thresholds],
                "model": limits.model,
            }
        )
        return
    # (a per-model cap has no default: without one, the model has none)
    otherwise = "default" if limits.model is None else "none"
    rows = [
        [
            limits.scope,
            dash(limits.scope_id),
            window.replace("_", "-"),
            str(dash(getattr(limits, window), NO_CAP_TEXT)),
            "override" if window in limits.overridden else otherwise,
        ]
        for window in shown
    ]
    if limits.model is not None:
        rows = [[*row[:2], printable(limits.model), *row[2:]] for row in rows]
        print_table(["scope", "id", "model", "window", "limit", "source"], rows)
        return
    print_table(["scope", "id", "window", "limit", "source"], rows)
    if limits.action is not None:
        thresholds = ", ".join(str(t) for t in limits.thresholds)
        print(f"action: {limits.action} (thresholds {thresholds})")
