"""What ``spendgate plans set`` reads: a plan from the command line's
options, or every plan of a file (bursar's ``plans`` mapping, or a whole
book's, JSON or YAML), as ``set_plan`` calls, each checked by ``set_plan``'s
own rules before any is made (a file with one bad plan sets none).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from spendgate.cli.runner import UsageError
from spendgate.errors import InvalidIdError, InvalidIdTypeError, PricingConfigError
from spendgate.errors.arguments import shown

__all__ = ["plans_to_set"]

#: the fields of a bursar plan that ``plans set FILE`` reads (``id`` is
#: bursar's own copy of the key; the billing fields are bursar's billing side)
_FILE_FIELDS = (
    "id",
    "name",
    "free_allowance",
    "rate_overrides",
    "features",
    "feature_limits",
    "allowance_period",
    "period",
)


def plans_to_set(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The ``set_plan`` calls ``plans set`` makes, every plan checked by
    bursar's rules before any is set: a file with one bad plan sets none.

    :raise UsageError: a bad option, or a plan id and --file together
    :raise PricingConfigError: a file that does not read, or a bad plan
    """
    if (args.plan is None) == (args.file is None):
        raise UsageError("give a plan id or --file (one of them)")
    if args.file is not None:
        calls = [_from_file(pid, plan) for pid, plan in _file_plans(args.file).items()]
    else:
        calls = [_from_options(args)]
    for call in calls:
        _check_plan(call)
    return calls


def _from_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "plan_id": args.plan,
        "name": args.name,
        "free_allowance": args.allowance,
        "period": args.period,
        "rate_overrides": dict(_pairs(args.rate, "--rate")) or None,
        "features": {k: _value(v) for k, v in _pairs(args.feature, "--feature")}
        or None,
        "feature_limits": {k: _limit(v) for k, v in _pairs(args.limit, "--limit")}
        or None,
    }


def _check_plan(call: dict[str, Any]) -> None:
    """``set_plan``'s own checks of one call, made before any plan is set.

    :raise UsageError: a bad plan id or name
    :raise PricingConfigError: a plan bursar would refuse
    """
    from spendgate.core.ids import check_id
    from spendgate.plans.definitions import plan_document
    from spendgate.pricing.book import NAME_MAX

    try:
        ids = {
            key: check_id(key, call[key], NAME_MAX)
            for key in ("plan_id", "name")
            if call[key] is not None
        }
    except (InvalidIdError, InvalidIdTypeError) as exc:
        raise UsageError(str(exc)) from None
    plan_document(**{**call, **ids})


def _pairs(values: list[str], option: str) -> list[tuple[str, str]]:
    pairs = []
    for text in values:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise UsageError(f"{option} takes NAME=VALUE, not {shown(text)}")
        pairs.append((key, value))
    return pairs


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _limit(text: str) -> dict[str, Any]:
    parts = text.split(":")
    try:
        # (isdigit() alone takes "²", which int() refuses, and int() refuses
        # more than 4,300 digits)
        max_calls = int(parts[0]) if parts[0].isascii() and parts[0].isdigit() else -1
    except ValueError:
        max_calls = -1
    if max_calls < 0 or len(parts) > 3:
        raise UsageError(
            f"--limit takes FEATURE=MAX[:PERIOD[:ACTION]], not {shown(text)}"
        )
    limit: dict[str, Any] = {"max_calls": max_calls}
    for key, part in zip(("period", "action"), parts[1:], strict=False):
        limit[key] = part
    return limit


def _file_plans(file: str) -> dict[str, Any]:
    from spendgate.cli.pricing import read_book

    data = read_book(file)  # (read as a price book is: UTF-8, bounded)
    if isinstance(data.get("plans"), dict):
        data = data["plans"]  # a whole book: its plans
    if not data:
        raise PricingConfigError("the file holds no plans (a mapping of plan id: plan)")
    return data


def _from_file(plan_id: str, plan: object) -> dict[str, Any]:
    if not isinstance(plan, dict):
        raise PricingConfigError(f"plans.{plan_id}: must be a mapping")
    other = sorted(set(plan) - set(_FILE_FIELDS))
    if other:
        raise UsageError(
            f"plans.{plan_id}: spendgate keeps no {', '.join(other)} (bursar's "
            "billing side): leave them out, or publish the book with "
            "'spendgate pricing set', which keeps them as written"
        )
    return {
        "plan_id": plan_id,
        "name": plan.get("name"),
        "free_allowance": plan.get("free_allowance", 0),
        "period": plan.get("period") or plan.get("allowance_period") or "monthly",
        "rate_overrides": plan.get("rate_overrides"),
        "features": plan.get("features"),
        "feature_limits": plan.get("feature_limits"),
    }
