"""The sections of a bursar price book that are not prices: ``plans``,
``tiers``, ``subscriptions``, ``credit_topups`` and ``signup_bonus``.

Each is checked as bursar checks it (unknown keys refused, types, ranges)
and kept as written, for the parts of spendgate that use them; a plan's
``rate_overrides`` are compiled like the book's own expressions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from spendgate.pricing import book
from spendgate.pricing.book import amount, choice, fail, integer, mapping, name
from spendgate.pricing.expressions import Expression, compile_expression

__all__ = ["check_plans", "check_tiers", "check_other"]

_PERIODS = ("daily", "weekly", "monthly", "yearly")
_ACTIONS = ("deny", "warn", "notify")
_BILLING_MODES = ("strict", "overdraft")
_ALLOWANCE_PERIODS = ("calendar_month", "rolling_30d", "anniversary")
_POLICY_FIELDS = ("billing_mode", "max_concurrent", "overdraft_floor")


def check_plans(
    value: object,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Expression]]]:
    """The ``plans`` section, checked, and each plan's compiled
    ``rate_overrides``.

    :raise PricingConfigError: for a plan bursar would refuse, or two plans
        of the same ``name``
    """
    plans = mapping(value, "plans")
    rates: dict[str, dict[str, Expression]] = {}
    names: dict[object, str] = {}
    for key, plan in plans.items():
        where = f"plans.{book.name(key, 'plans')}"
        rates[key] = _check_plan(mapping(plan, where), where)
        if plan["name"] in names:
            fail(where, f"the name {plan['name']!r} is also plan {names[plan['name']]}")
        names[plan["name"]] = key
    return plans, rates


def _check_plan(plan: dict[str, Any], where: str) -> dict[str, Expression]:
    known = dict(_PLAN_FIELDS)
    if "default_billing_mode" not in plan:
        # bursar's short alias, refused (as bursar does) next to the long name
        known["billing_mode"] = known["default_billing_mode"]
    _known_keys(plan, where, known)
    for required in ("id", "name"):
        if not isinstance(plan.get(required), str):
            fail(f"{where}.{required}", "is required, a string")
    for key, check in known.items():
        if plan.get(key) is not None:
            check(plan[key], f"{where}.{key}")
    overrides = plan.get("rate_overrides")
    if overrides is None:
        return {}
    return {
        model: compile_expression(text, f"{where}.rate_overrides.{model}")
        for model, text in mapping(overrides, f"{where}.rate_overrides").items()
    }


def _known_keys(section: dict[str, Any], where: str, known: object) -> None:
    for key in section:
        if key not in known:  # type: ignore[operator]
            fail(f"{where}.{key}", "unknown key")


def _string(value: object, where: str) -> None:
    if not isinstance(value, str):
        fail(where, "must be a string")


def _optional_int(value: object, where: str) -> None:
    integer(value, where, low=0)


def _features(value: object, where: str) -> None:
    for feature in mapping(value, where):
        _feature_name(feature, f"{where}.{feature}")


def _feature_name(feature: object, where: str) -> None:
    """A name ``use_feature`` can be called with: a string, not blank, of 1
    to ``NAME_MAX`` characters (any other could be stored, never used)."""
    if not isinstance(feature, str):
        fail(where, f"a feature name must be a string, not {type(feature).__name__}")
    if feature.isspace():
        fail(where, "a feature name must not be blank")
    name(feature, where)


def _feature_limits(value: object, where: str) -> None:
    for feature, limit in mapping(value, where).items():
        at = f"{where}.{feature}"
        _feature_name(feature, at)
        limit = mapping(limit, at)
        _known_keys(limit, at, ("max_calls", "period", "action"))
        integer(limit.get("max_calls"), f"{at}.max_calls")
        choice(limit.get("period", "monthly"), f"{at}.period", _PERIODS)
        choice(limit.get("action", "deny"), f"{at}.action", _ACTIONS)


def _rate_overrides(value: object, where: str) -> None:
    mapping(value, where)  # the expressions are compiled by _check_plan


def _per_operation(value: object, where: str) -> None:
    for operation, policy in mapping(value, where).items():
        at = f"{where}.{operation}"
        policy = mapping(policy, at)
        _known_keys(policy, at, _POLICY_FIELDS)
        choice(
            policy.get("billing_mode", "strict"), f"{at}.billing_mode", _BILLING_MODES
        )
        if policy.get("max_concurrent") is not None:
            integer(policy["max_concurrent"], f"{at}.max_concurrent")
        if policy.get("overdraft_floor") is not None:
            amount(
                policy["overdraft_floor"], f"{at}.overdraft_floor", allow_negative=True
            )


_PLAN_FIELDS: dict[str, Callable[[object, str], object]] = {
    "id": _string,
    "name": _string,
    "free_allowance": amount,
    "rate_overrides": _rate_overrides,
    "features": _features,
    "feature_limits": _feature_limits,
    "default_billing_mode": lambda v, w: choice(v, w, _BILLING_MODES),
    "per_operation": _per_operation,
    "max_concurrent": _optional_int,
    "overdraft_floor": lambda v, w: amount(v, w, allow_negative=True),
    "allowance_period": lambda v, w: choice(v, w, _ALLOWANCE_PERIODS),
}

_TIER_FIELDS = (
    "name",
    "priority",
    "expires",
    "default_ttl_days",
    "allow_overdraft",
    "is_default",
)


def check_tiers(value: object) -> None:
    """bursar's credit ``tiers``: a non-empty mapping, at most one tier with
    ``allow_overdraft`` and one with ``is_default``, a positive TTL."""
    tiers = mapping(value, "tiers")
    if not tiers:
        fail("tiers", "must not be empty (leave it out for no tiers)")
    overdraft = default = 0
    for key, tier in tiers.items():
        where = f"tiers.{key}"
        tier = mapping(tier, where)
        _known_keys(tier, where, _TIER_FIELDS)
        _string(tier.get("name"), f"{where}.name")
        integer(tier.get("priority"), f"{where}.priority", low=-(2**31))
        for flag in ("expires", "allow_overdraft", "is_default"):
            if not isinstance(tier.get(flag, False), bool):
                fail(f"{where}.{flag}", "must be true or false")
        if tier.get("default_ttl_days") is not None:
            integer(tier["default_ttl_days"], f"{where}.default_ttl_days", low=1)
        overdraft += bool(tier.get("allow_overdraft"))
        default += bool(tier.get("is_default"))
    if overdraft > 1:
        fail("tiers", "at most one tier may set allow_overdraft")
    if default > 1:
        fail("tiers", "at most one tier may set is_default")


def check_other(cfg: dict[str, Any]) -> None:
    """``signup_bonus`` (a count of credits), ``subscriptions`` and
    ``credit_topups`` (billing offers: mappings of mappings, kept as written
    for bursar's billing side, which spendgate does not have)."""
    if cfg.get("signup_bonus") is not None:
        integer(cfg["signup_bonus"], "signup_bonus")
    for section in ("subscriptions", "credit_topups"):
        if cfg.get(section) is not None:
            for key, offer in mapping(cfg[section], section).items():
                mapping(offer, f"{section}.{key}")
