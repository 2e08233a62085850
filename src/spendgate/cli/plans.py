"""``spendgate plans`` and ``spendgate features``.

``plans list`` shows the plans in force (set with ``plans set``, or the
active price book's); ``plans set`` defines one from options or every plan
of a file (bursar's ``plans`` mapping, or a whole book's, JSON or YAML);
``plans assign USER PLAN`` starts the user's cycle now, ``plans unassign
USER`` takes the plan away, ``plans show USER`` prints the plan and the
allowance left in the current period. ``features check USER FEATURE`` reads
a feature, ``features use USER FEATURE`` counts one call (exit 3 at a
``deny`` limit or when the plan lacks the feature).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from spendgate.cli.plan_input import plans_to_set
from spendgate.cli.printer import dash, print_json, print_table, printable
from spendgate.cli.runner import UsageError, run_on_budget
from spendgate.errors import ExitCode, PricingConfigError

if TYPE_CHECKING:
    from spendgate.manager import BudgetManager
    from spendgate.plans.models import FeatureCheck, Plan, UserPlan

    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def add_plans(sub: SubParsers) -> None:
    parser = sub.add_parser(
        "plans",
        help="define plans, put users on them, show a user's plan",
        description="Subscription plans (bursar's fields): a free allowance per "
        "period of each user's own cycle, rate overrides, features.",
    )
    actions = parser.add_subparsers(dest="plans_action", metavar="ACTION")
    actions.required = True
    listing = actions.add_parser("list", help="the plans in force")
    _json_option(listing)
    listing.set_defaults(handler=run_list)
    _add_set(actions)
    assign = actions.add_parser(
        "assign", help="put a user on a plan (cycle starts now)"
    )
    assign.add_argument("user")
    assign.add_argument("plan")
    _json_option(assign)
    assign.set_defaults(handler=run_assign)
    unassign = actions.add_parser("unassign", help="take a user's plan away")
    unassign.add_argument("user")
    unassign.set_defaults(handler=run_unassign)
    show = actions.add_parser("show", help="a user's plan and allowance left")
    show.add_argument("user")
    _json_option(show)
    show.set_defaults(handler=run_show)


def _add_set(actions: SubParsers) -> None:
    put = actions.add_parser(
        "set",
        help="define a plan from options, or every plan of --file",
        description="Define or redefine a plan (over a price book's plan of the "
        "same id). --file reads bursar's plans mapping (or a book with plans).",
    )
    put.add_argument("plan", nargs="?", help="the plan id (not with --file)")
    put.add_argument(
        "--file", help="plans as bursar writes them, JSON or YAML; -: stdin"
    )
    put.add_argument("--name", help="the display name (default: the id)")
    put.add_argument("--allowance", default="0", help="the free allowance per period")
    put.add_argument(
        "--period",
        default="monthly",
        help="daily, weekly, monthly (default), yearly, calendar_month, rolling_30d",
    )
    put.add_argument(
        "--rate",
        action="append",
        default=[],
        metavar="MODEL=EXPRESSION",
        help="a rate override (_default for every other model); repeatable",
    )
    put.add_argument(
        "--feature",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help='a feature; VALUE is JSON (true, 4, "x") or else text; repeatable',
    )
    put.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="FEATURE=MAX[:PERIOD[:ACTION]]",
        help="a feature's calls per period (daily|weekly|monthly|yearly) with "
        "action deny|warn|notify, e.g. image_gen=5:monthly:deny; repeatable",
    )
    _json_option(put)
    put.set_defaults(handler=run_set)


def add_features(sub: SubParsers) -> None:
    parser = sub.add_parser(
        "features",
        help="check or use a feature of a user's plan",
        description="Features of a user's plan (bursar's truthy rule) and their "
        "call limits per calendar period (UTC).",
    )
    actions = parser.add_subparsers(dest="features_action", metavar="ACTION")
    actions.required = True
    for name, text in (
        ("check", "whether the user's plan has the feature, and the calls left"),
        ("use", "count one call of the feature (exit 3 when refused)"),
    ):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument("user")
        action.add_argument("feature")
        if name == "use":
            action.add_argument("--idempotency-key", help="count the call once")
        _json_option(action)
        action.set_defaults(handler=run_check if name == "check" else run_use)


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print JSON instead of text"
    )


# -- plans ---------------------------------------------------------------------------


def run_list(args: argparse.Namespace) -> int:
    async def work(budget: BudgetManager) -> int:
        plans = await budget.list_plans()
        if args.json:
            print_json([_plan_json(p) for p in plans])
            return ExitCode.OK
        rows = [
            [
                p.plan_id,
                p.name,
                p.free_allowance,
                p.period,
                p.source,
                ", ".join(sorted(p.features)) or "-",
            ]
            for p in plans
        ]
        print_table(["plan", "name", "allowance", "period", "source", "features"], rows)
        return ExitCode.OK

    return run_on_budget(work)


def run_set(args: argparse.Namespace) -> int:
    try:
        calls = plans_to_set(args)
    except (UsageError, PricingConfigError) as exc:
        print(f"spendgate: {printable(exc)}", file=sys.stderr)
        return ExitCode.USAGE

    async def work(budget: BudgetManager) -> int:
        done = [await budget.set_plan(**call) for call in calls]
        if args.json:
            print_json([_plan_json(p) for p in done])
        else:
            for plan in done:
                print(f"plan {printable(plan.plan_id)} set")
        return ExitCode.OK

    return run_on_budget(work)


def run_assign(args: argparse.Namespace) -> int:
    async def work(budget: BudgetManager) -> int:
        up = await budget.assign_plan(args.user, args.plan)
        _print_user_plan(args.user, up, args.json)
        return ExitCode.OK

    return run_on_budget(work)


def run_unassign(args: argparse.Namespace) -> int:
    async def work(budget: BudgetManager) -> int:
        removed = await budget.unassign_plan(args.user)
        print("plan removed" if removed else "the user had no plan")
        return ExitCode.OK

    return run_on_budget(work)


def run_show(args: argparse.Namespace) -> int:
    async def work(budget: BudgetManager) -> int:
        _print_user_plan(args.user, await budget.get_user_plan(args.user), args.json)
        return ExitCode.OK

    return run_on_budget(work)


def _print_user_plan(user: str, up: UserPlan | None, as_json: bool) -> None:
    if as_json:
        print_json({"user_id": user, "plan": up})
        return
    if up is None:
        print(f"{printable(user)}: no plan")
        return
    rows: list[list[object]] = [
        ["plan", up.plan_id],
        ["name", dash(up.name, "(no longer in force)")],
        ["allowance", up.allowance],
        ["used", up.allowance_used],
        ["remaining", up.allowance_remaining],
        ["period", up.period],
        ["period start", up.period_start.isoformat()],
        ["resets at", up.resets_at.isoformat()],
        ["assigned at", up.assigned_at.isoformat()],
    ]
    print_table(["user", printable(user)], rows)


def _plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "plan_id": plan.plan_id,
        "name": plan.name,
        "free_allowance": plan.free_allowance,
        "period": plan.period,
        "rate_overrides": dict(plan.rate_overrides),
        "features": dict(plan.features),
        "feature_limits": dict(plan.feature_limits),
        "source": plan.source,
    }


# -- features ------------------------------------------------------------------------


def run_check(args: argparse.Namespace) -> int:
    async def work(budget: BudgetManager) -> int:
        _print_check(await budget.check_feature(args.user, args.feature), args.json)
        return ExitCode.OK

    return run_on_budget(work)


def run_use(args: argparse.Namespace) -> int:
    async def work(budget: BudgetManager) -> int:
        check = await budget.use_feature(
            args.user, args.feature, idempotency_key=args.idempotency_key
        )
        _print_check(check, args.json)
        return ExitCode.OK

    return run_on_budget(work)


def _print_check(check: FeatureCheck, as_json: bool) -> None:
    if as_json:
        print_json(check)
        return
    rows: list[list[object]] = [
        ["plan", dash(check.plan_id, "(no plan)")],
        ["has feature", "yes" if check.has_feature else "no"],
        ["value", json.dumps(check.value)],
    ]
    if check.limit is not None:
        rows += [
            ["limit", f"{check.limit} {check.period} ({check.action})"],
            ["used", check.used],
            ["remaining", check.remaining],
            ["resets at", dash(check.resets_at and check.resets_at.isoformat())],
        ]
        if check.over_limit:
            rows.append(["over limit", "yes"])
    print_table(["feature", printable(check.feature)], rows)
