"""Plans from their two sources, in bursar's format, checked by bursar's rules.

``set_plan`` stores ``{"period": <cycle>, "plan": <bursar's plan>}`` per
plan; a price book's ``plans`` are bursar's plans as written. Both are
checked by :func:`spendgate.pricing.plans.check_plans` (the price book's
own check: unknown keys, types, ranges) and become :class:`Plan` values.

A bursar plan's cycle is its ``allowance_period``: ``anniversary`` is
spendgate's ``monthly`` (the user's own cycle), ``calendar_month`` and
``rolling_30d`` are kept; absent, it is ``monthly``, the user's own cycle
(DESIGN's rule: bursar's default is ``calendar_month``, write it to keep it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal

from spendgate.core.money import from_micros, limit_micros
from spendgate.plans.cycle import CYCLE_PERIODS
from spendgate.plans.models import FeatureLimit, Plan
from spendgate.pricing import book
from spendgate.pricing.book import fail
from spendgate.pricing.plans import check_plans

__all__ = ["cycle_of", "plan_document", "plan_from_book", "plan_from_record"]

#: bursar's ``allowance_period`` -> spendgate's cycle
_FROM_BURSAR = {
    None: "monthly",
    "anniversary": "monthly",
    "calendar_month": "calendar_month",
    "rolling_30d": "rolling_30d",
}
#: spendgate's cycle -> bursar's ``allowance_period``, where bursar has it
_TO_BURSAR = {
    "monthly": "anniversary",
    "calendar_month": "calendar_month",
    "rolling_30d": "rolling_30d",
}


def cycle_of(allowance_period: object) -> str:
    """The cycle of a bursar plan's ``allowance_period`` (checked already)."""
    return _FROM_BURSAR[allowance_period]  # type: ignore[index]


def plan_document(
    plan_id: str,
    name: str | None,
    free_allowance: object,
    period: object,
    rate_overrides: Mapping[str, str] | None,
    features: Mapping[str, Any] | None,
    feature_limits: Mapping[str, Mapping[str, Any]] | None,
) -> tuple[dict[str, Any], Plan]:
    """``set_plan``'s arguments as the document stored, and the plan.

    :raise PricingConfigError: a plan bursar would refuse, or an unknown
        ``period``
    """
    where = f"plans.{plan_id}"
    if period == "anniversary":
        period = "monthly"
    if period not in CYCLE_PERIODS:
        fail(f"{where}.period", f"must be one of {', '.join(CYCLE_PERIODS)}")
    plan: dict[str, Any] = {
        "id": plan_id,
        "name": plan_id if name is None else name,
        "free_allowance": free_allowance,
    }
    for key, value in (
        ("rate_overrides", rate_overrides),
        ("features", features),
        ("feature_limits", feature_limits),
    ):
        if value is not None:
            plan[key] = value
    bursar_period = _TO_BURSAR.get(str(period))
    if bursar_period is not None:
        plan["allowance_period"] = bursar_period
    checked = _plan_built(plan_id, book.plain(plan), str(period), "set_plan")
    return {"period": period, "plan": dict(checked.config)}, checked


def plan_from_record(plan_id: str, text: bytes | str) -> Plan:
    """A plan as ``set_plan`` stored it."""
    record = json.loads(text, parse_float=Decimal)
    return _plan_built(
        plan_id, book.plain(record["plan"]), record["period"], "set_plan"
    )


def plan_from_book(plan_id: str, config: Mapping[str, Any]) -> Plan:
    """One plan of a price book's ``plans`` (checked when the book loaded)."""
    plan = book.plain(config)
    period = cycle_of(plan.get("allowance_period"))
    return _plan_built(plan_id, plan, period, "price_book")


def _plan_built(
    plan_id: str,
    plan: dict[str, Any],
    period: str,
    source: Literal["set_plan", "price_book"],
) -> Plan:
    """``plan`` checked by bursar's rules, as a :class:`Plan`."""
    _, rates = check_plans({plan_id: plan})
    config = book.jsonable(plan)
    overrides = dict(config.get("rate_overrides") or {})
    limits = {
        feature: FeatureLimit(
            max_calls=limit["max_calls"],
            period=limit.get("period", "monthly"),
            action=limit.get("action", "deny"),
        )
        for feature, limit in (config.get("feature_limits") or {}).items()
    }
    return Plan(
        plan_id=plan_id,
        name=config["name"],
        free_allowance=_drawable(plan.get("free_allowance", 0)),
        period=period,
        rate_overrides=overrides,
        features=dict(config.get("features") or {}),
        feature_limits=limits,
        source=source,
        config=config,
        rates=rates[plan_id],
        engine=_overrides_engine(overrides),
    )


def _drawable(free_allowance: object) -> Decimal:
    """The allowance as charges draw on it: micro-units, rounded down as a
    credit is (the plan's ``config`` keeps it as written)."""
    amount = book.amount(free_allowance, "free_allowance")
    return from_micros(limit_micros(amount))


def _overrides_engine(overrides: Mapping[str, str]) -> Any:
    """The rate overrides as a price book of their own (``None`` for none):
    what prices a plan's user when no book is active."""
    if not overrides:
        return None
    from spendgate.pricing.engine import PricingEngine

    return PricingEngine.from_dict({"models": dict(overrides)})
