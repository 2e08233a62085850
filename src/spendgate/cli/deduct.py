"""``spendgate deduct``: the one-call charge from the command line.

Prices a usage by the active price book (the usage flags), or takes an
amount, or a book's fixed job (``--fixed``), and charges it in one step or
is refused (exit 3: a cap, the balance, a team's pool or member cap), as
``BudgetManager.deduct`` does; the same fields as ``POST /v1/deduct``. A
deduct is an admission: Redis not answering is exit 4 and nothing is
charged (it is never spooled by this command).
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from spendgate.cli.printer import print_json, printable, text_or_none
from spendgate.cli.runner import UsageError, run_on_budget
from spendgate.errors import ExitCode
from spendgate.pricing.usage import COUNTERS

if TYPE_CHECKING:
    from spendgate.manager import BudgetManager
    from spendgate.models import DeductResult
    from spendgate.pricing.usage import UsageMetrics

    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def add_deduct(sub: SubParsers) -> None:
    parser = sub.add_parser(
        "deduct",
        help="price a usage (or take an amount) and charge it, or be refused",
        description="Charge a user in one step, as BudgetManager.deduct does: "
        "AMOUNT, or a usage priced by the active price book (the usage flags, "
        "--model naming the model), or --fixed JOB; the plan's allowance "
        "pays first, then the grants and the balance (always enforced), or "
        "--team's pool. Refused (exit 3): nothing changes.",
    )
    parser.add_argument("user", help="the user id")
    parser.add_argument("amount", nargs="?", help="an amount, e.g. 0.25")
    for name in COUNTERS:
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=int, metavar="N", help="usage: " + name)
    parser.add_argument(
        "--tool",
        action="append",
        default=[],
        metavar="NAME",
        help="usage: one tool call, priced by name (repeat it per call)",
    )
    parser.add_argument(
        "--model",
        help="the model: the usage's, or the amount's (its per-model caps hold)",
    )
    parser.add_argument("--fixed", metavar="JOB", help="the price book's fixed job")
    parser.add_argument("--project", help="the project id")
    parser.add_argument("--team", help="charge this team's pool (a member's charge)")
    parser.add_argument(
        "--idempotency-key",
        help="run it again with the same key and nothing is charged twice",
    )
    parser.add_argument("--metadata", help="a JSON object kept on the ledger row")
    parser.add_argument("--json", action="store_true", help="print JSON instead")
    parser.set_defaults(handler=run_deduct)


def run_deduct(args: argparse.Namespace) -> int:
    async def work(budget: BudgetManager) -> int:
        metadata = _metadata(args.metadata)
        if args.fixed is not None:
            if _usage_given(args) or args.amount is not None or args.model:
                raise UsageError("--fixed takes no AMOUNT, usage flags or --model")
            result = await budget.deduct_fixed(
                args.user,
                args.fixed,
                args.project,
                args.idempotency_key,
                metadata,
                team_id=args.team,
            )
        else:
            result = await budget.deduct(
                args.user,
                _charge(args),
                args.project,
                args.team,
                args.idempotency_key,
                metadata,
                model=args.model if args.amount is not None else None,
            )
        _report(result, budget.config.unit, args.json)
        return ExitCode.OK

    return run_on_budget(work)


def _usage_given(args: argparse.Namespace) -> bool:
    return bool(args.tool) or any(getattr(args, n) is not None for n in COUNTERS)


def _charge(args: argparse.Namespace) -> UsageMetrics | str:
    """AMOUNT, or the usage of the flags; exactly one."""
    from spendgate.pricing.usage import ToolCall, UsageMetrics

    if args.amount is not None:
        if _usage_given(args):
            raise UsageError("give AMOUNT or usage flags, not both")
        return str(args.amount)
    if not _usage_given(args):
        raise UsageError("give AMOUNT, usage flags (--input-tokens, ...) or --fixed")
    counts = {n: getattr(args, n) for n in COUNTERS if getattr(args, n) is not None}
    tools = tuple(ToolCall(name) for name in args.tool)
    return UsageMetrics(model=args.model, tool_calls=tools, **counts)


def _metadata(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--metadata is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise UsageError("--metadata must be a JSON object")
    return value


def _report(result: DeductResult, unit: str, as_json: bool) -> None:
    if as_json:
        print_json(_result_json(result))
        return
    who = printable(result.user_id)
    payer = f"team {printable(result.team_id)}" if result.team_id else who
    if not result.entry_id:  # (a charge of 0 touches nothing: no entry)
        print(f"nothing charged to {payer} (user {who}): it costs 0")
        if result.price_version is not None:
            print(f"priced by price book v{result.price_version}")
        return
    again = "already charged (same key): " if result.replayed else ""
    print(f"{again}charged {result.amount} {unit} to {payer} (user {who})")
    if result.allowance_used:
        print(f"plan allowance paid {result.allowance_used}")
    if result.balance_after is not None:
        print(f"balance {result.balance_after}")
    if result.price_version is not None:
        print(f"priced by price book v{result.price_version}")
    for w in result.warnings:
        scope = w.scope if w.scope_id is None else f"{w.scope} {printable(w.scope_id)}"
        print(f"warning: {scope} {w.window} at {w.threshold} of {w.limit}")
    print(f"entry {printable(result.entry_id)}")


def _result_json(result: DeductResult) -> dict[str, Any]:
    breakdown = result.breakdown
    return {
        "entry_id": result.entry_id,
        "user_id": result.user_id,
        "amount": str(result.amount),
        "allowance_used": str(result.allowance_used),
        "balance_after": text_or_none(result.balance_after),
        "breakdown": None if breakdown is None else breakdown.to_dict(),
        "price_version": result.price_version,
        "replayed": result.replayed,
        "warnings": [
            {
                "scope": w.scope,
                "scope_id": w.scope_id,
                "window": w.window,
                "threshold": str(w.threshold),
                "limit": str(w.limit),
                "spent": str(w.spent),
            }
            for w in result.warnings
        ],
        "team_id": result.team_id,
    }
