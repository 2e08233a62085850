"""What the plan calls return: a plan, a user's plan, a feature check."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from spendgate.pricing.engine import PricingEngine
    from spendgate.pricing.expressions import Expression

__all__ = ["FeatureCheck", "FeatureLimit", "Plan", "UserPlan", "has_feature"]

#: what a feature limit does at ``max_calls``
FeatureAction = Literal["deny", "warn", "notify"]
#: the calendar period a feature limit counts in (UTC)
FeaturePeriod = Literal["daily", "weekly", "monthly", "yearly"]


def has_feature(features: Mapping[str, Any], feature: str) -> bool:
    """bursar's truthy rule: a feature is there unless it is absent,
    ``None`` or ``False`` (``0`` and ``""`` are values a plan has)."""
    value = features.get(feature)
    return value is not None and value is not False


@dataclass(frozen=True, slots=True)
class FeatureLimit:
    """bursar's ``feature_limits`` entry: at most ``max_calls`` calls of the
    feature per calendar ``period`` (UTC)."""

    #: the calls allowed per period
    max_calls: int
    #: ``daily``, ``weekly`` (ISO, from Monday), ``monthly`` or ``yearly``
    period: FeaturePeriod = "monthly"
    #: at ``max_calls``: ``deny`` refuses, ``warn`` and ``notify`` admit and
    #: write one ``credits.cap_warning`` event per period
    action: FeatureAction = "deny"


@dataclass(frozen=True, slots=True)
class Plan:
    """A subscription plan (bursar's fields), from ``set_plan`` or from the
    active price book's ``plans``."""

    #: the plan's key
    plan_id: str
    #: its display name
    name: str
    #: the free allowance of each period of the user's cycle (to the
    #: micro-unit, rounded down as a credit is)
    free_allowance: Decimal
    #: the cycle: ``daily``, ``weekly``, ``monthly``, ``yearly``,
    #: ``calendar_month`` or ``rolling_30d`` (see :mod:`spendgate.plans.cycle`)
    period: str
    #: model -> price expression (``_default`` for every other model), taking
    #: precedence over the price book's for the plan's users
    rate_overrides: Mapping[str, str]
    #: feature name -> value (bursar's truthy rule, :func:`has_feature`)
    features: Mapping[str, Any]
    #: feature name -> its call limit
    feature_limits: Mapping[str, FeatureLimit]
    #: where it comes from: ``"set_plan"`` (wins) or ``"price_book"``
    source: Literal["set_plan", "price_book"]
    #: the plan in bursar's format, as written (JSON-able)
    config: Mapping[str, Any] = field(repr=False)
    #: the compiled ``rate_overrides``, for the price book's ``calculate``
    rates: Mapping[str, Expression] = field(repr=False, compare=False)
    #: ``rate_overrides`` alone as a price book: prices the model part of a
    #: usage when no book is active (``None`` without overrides)
    engine: PricingEngine | None = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class UserPlan:
    """A user's plan and where its cycle stands (``get_user_plan``)."""

    user_id: str
    plan_id: str
    #: the plan's name; ``None`` when the plan is no longer defined (a price
    #: book without it was activated): the user then has no allowance,
    #: features or rate overrides until assigned another
    name: str | None
    #: the plan's features (empty when it is no longer defined)
    features: Mapping[str, Any]
    #: the free allowance of each period
    allowance: Decimal
    #: what was used of it in the current period
    allowance_used: Decimal
    #: ``allowance - allowance_used``, never below zero
    allowance_remaining: Decimal
    #: the cycle (see :class:`Plan`)
    period: str
    #: when the current period started
    period_start: datetime
    #: when the allowance renews (the next period starts)
    resets_at: datetime
    #: when the plan was assigned: the cycle's anchor
    assigned_at: datetime


@dataclass(frozen=True, slots=True)
class FeatureCheck:
    """A user's feature (``check_feature``, ``use_feature``)."""

    user_id: str
    feature: str
    #: the user's plan (``None``: no plan)
    plan_id: str | None
    #: bursar's truthy rule on the plan's ``features``
    has_feature: bool
    #: the feature's value in the plan (``None`` when absent)
    value: Any
    #: ``max_calls`` of the feature's limit (``None``: not limited)
    limit: int | None = None
    #: the calls counted this period (``None``: not limited)
    used: int | None = None
    #: ``limit - used``, never below zero (``None``: not limited)
    remaining: int | None = None
    #: the limit's calendar period (``None``: not limited)
    period: str | None = None
    #: when the count starts again (``None``: not limited)
    resets_at: datetime | None = None
    #: the limit's action (``None``: not limited)
    action: FeatureAction | None = None
    #: ``use_feature``: admitted past ``max_calls`` (action ``warn`` or
    #: ``notify``)
    over_limit: bool = False
    #: ``use_feature``: an idempotent replay (nothing counted)
    replayed: bool = False
