"""What the HTTP service reads and answers about plans and features:
``/v1/plans``, ``/v1/users/{user_id}/plan`` and
``/v1/users/{user_id}/features/{feature}``.

As in :mod:`spendgate.server.schemas`: strict request models (the budget
checks a plan further, by bursar's rules), response models built by their
``of`` constructors, amounts as exact decimal strings, instants as ISO 8601.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from spendgate.plans.models import FeatureCheck, FeatureLimit, Plan, UserPlan
from spendgate.server.fields import Amount, Id

_STRICT = ConfigDict(extra="forbid", strict=True)

#: a plan's cycle (``anniversary`` is bursar's name of ``monthly``)
CycleName = Literal[
    "daily",
    "weekly",
    "monthly",
    "yearly",
    "calendar_month",
    "rolling_30d",
    "anniversary",
]


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


class FeatureLimitBody(BaseModel):
    """A feature's call limit per calendar period (UTC), as a ``PUT`` takes
    it."""

    model_config = _STRICT
    max_calls: Annotated[int, Field(ge=0, le=2**53)]
    period: Literal["daily", "weekly", "monthly", "yearly"] = "monthly"
    action: Literal["deny", "warn", "notify"] = "deny"


class FeatureLimitView(BaseModel):
    """A plan's feature limit, as answered: unbounded, since a plan set from
    Python, the CLI or a price book may allow more calls than a ``PUT``
    takes, and one such plan must not fail every read of the plans."""

    max_calls: int
    period: str
    action: str

    @classmethod
    def of(cls, limit: FeatureLimit) -> FeatureLimitView:
        return cls(max_calls=limit.max_calls, period=limit.period, action=limit.action)


class PlanRequest(BaseModel):
    """``PUT /v1/plans/{plan_id}``: define or redefine a plan (over a price
    book's plan of the same id), in force on every instance within a second."""

    model_config = _STRICT
    name: Id | None = None
    free_allowance: Amount = Decimal(0)
    period: CycleName = "monthly"
    rate_overrides: dict[str, str] | None = None
    features: dict[str, Any] | None = None
    feature_limits: dict[str, FeatureLimitBody] | None = None


class AssignRequest(BaseModel):
    """``PUT /v1/users/{user_id}/plan``: put the user on a plan; its cycle
    starts now (again, when the user had one: no pro-rata)."""

    model_config = _STRICT
    plan_id: Id


class UseFeatureRequest(BaseModel):
    """``POST /v1/users/{user_id}/features/{feature}/use`` (the body is
    optional)."""

    model_config = _STRICT
    idempotency_key: Id | None = None


class PlanBody(BaseModel):
    plan_id: str
    name: str
    free_allowance: str
    period: str
    rate_overrides: dict[str, str]
    features: dict[str, Any]
    feature_limits: dict[str, FeatureLimitView]
    #: ``set_plan`` (wins) or ``price_book``
    source: str

    @classmethod
    def of(cls, plan: Plan) -> PlanBody:
        return cls(
            plan_id=plan.plan_id,
            name=plan.name,
            free_allowance=str(plan.free_allowance),
            period=plan.period,
            rate_overrides=dict(plan.rate_overrides),
            features=dict(plan.features),
            feature_limits={
                f: FeatureLimitView.of(limit)
                for f, limit in plan.feature_limits.items()
            },
            source=plan.source,
        )


class PlansResponse(BaseModel):
    plans: list[PlanBody]


class UserPlanResponse(BaseModel):
    """A user's plan; every field but ``user_id`` is null when the user has
    none."""

    user_id: str
    plan_id: str | None
    #: null too when the plan is no longer in force
    name: str | None
    features: dict[str, Any] | None
    allowance: str | None
    allowance_used: str | None
    allowance_remaining: str | None
    period: str | None
    period_start: str | None
    resets_at: str | None
    assigned_at: str | None

    @classmethod
    def of(cls, user_id: str, up: UserPlan | None) -> UserPlanResponse:
        if up is None:
            return cls(
                user_id=user_id,
                **dict.fromkeys(
                    (
                        "plan_id",
                        "name",
                        "features",
                        "allowance",
                        "allowance_used",
                        "allowance_remaining",
                        "period",
                        "period_start",
                        "resets_at",
                        "assigned_at",
                    )
                ),
            )
        return cls(
            user_id=up.user_id,
            plan_id=up.plan_id,
            name=up.name,
            features=dict(up.features),
            allowance=str(up.allowance),
            allowance_used=str(up.allowance_used),
            allowance_remaining=str(up.allowance_remaining),
            period=up.period,
            period_start=up.period_start.isoformat(),
            resets_at=up.resets_at.isoformat(),
            assigned_at=up.assigned_at.isoformat(),
        )


class UnassignResponse(BaseModel):
    user_id: str
    #: false when the user had no plan
    removed: bool


class FeatureResponse(BaseModel):
    """A user's feature; the limit's fields are null when it has none."""

    user_id: str
    feature: str
    plan_id: str | None
    has_feature: bool
    value: Any
    limit: int | None
    used: int | None
    remaining: int | None
    period: str | None
    resets_at: str | None
    action: str | None
    #: use: admitted past max_calls (action warn or notify)
    over_limit: bool
    #: use: an idempotent replay (nothing counted)
    replayed: bool

    @classmethod
    def of(cls, check: FeatureCheck) -> FeatureResponse:
        return cls(
            user_id=check.user_id,
            feature=check.feature,
            plan_id=check.plan_id,
            has_feature=check.has_feature,
            value=check.value,
            limit=check.limit,
            used=check.used,
            remaining=check.remaining,
            period=check.period,
            resets_at=_iso(check.resets_at),
            action=check.action,
            over_limit=check.over_limit,
            replayed=check.replayed,
        )
