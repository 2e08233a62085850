"""The HTTP side of limits: ``/v1/limits``' bodies (caps, and the cap
action with its thresholds), and the thresholds a charge's answer says it
reached."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict

from spendgate.models import CapWarning, Limits
from spendgate.server.fields import Amount, ModelName

_STRICT = ConfigDict(extra="forbid", strict=True)


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


#: ``deny`` refuses at the cap, ``warn`` admits past it and the charge's
#: answer carries the thresholds reached, ``notify`` admits past it; each
#: writes the threshold events
CapActionName = Literal["deny", "warn", "notify"]

#: a threshold, a fraction of the cap in (0, 1]: a number or a decimal string
Threshold = str | int | float


class CapWarningBody(BaseModel):
    """A threshold of a ``warn`` cap that the charge reached (its event was
    written with it)."""

    scope: str
    scope_id: str | None
    window: str
    threshold: str
    limit: str
    spent: str

    @classmethod
    def of(cls, warning: CapWarning) -> CapWarningBody:
        return cls(
            scope=warning.scope,
            scope_id=warning.scope_id,
            window=warning.window,
            threshold=str(warning.threshold),
            limit=str(warning.limit),
            spent=str(warning.spent),
        )


def warnings_of(warnings: tuple[CapWarning, ...]) -> list[CapWarningBody]:
    return [CapWarningBody.of(w) for w in warnings]


class LimitsRequest(BaseModel):
    """``PUT /v1/limits/{scope}/{id}``: a field left out keeps its value,
    ``null`` removes the cap, an amount sets it. ``weekly`` and
    ``per_minute`` need those windows on in the deployment (422 otherwise).
    ``action`` (``null`` drops it) and its ``thresholds`` (fractions of the
    cap in (0, 1]; the action's default when left out) need ``cap_actions``."""

    model_config = _STRICT
    daily: Amount | None = None
    monthly: Amount | None = None
    weekly: Amount | None = None
    per_minute: Amount | None = None
    action: CapActionName | None = None
    thresholds: list[Threshold] | None = None
    #: set that model's caps in the scope (daily and monthly), as ``?model=``
    model: ModelName | None = None


class LimitsResponse(BaseModel):
    scope: str
    scope_id: str | None
    daily: str | None
    monthly: str | None
    #: ``null``: no weekly cap (or weekly caps are off)
    weekly: str | None
    #: ``null``: no per-minute cap (or per-minute caps are off)
    per_minute: str | None
    #: windows with a per-entity override (the others follow the defaults)
    overridden: list[str]
    #: the cap action (``null``: none, refused at the caps without events)
    action: str | None
    #: its thresholds, fractions of the caps, the cap itself (1) last
    thresholds: list[str]
    #: the model these caps are for (``?model=``); ``null``: the scope's own
    model: str | None = None

    @classmethod
    def of(cls, limits: Limits) -> LimitsResponse:
        return cls(
            scope=limits.scope,
            scope_id=limits.scope_id,
            daily=_money(limits.daily),
            monthly=_money(limits.monthly),
            weekly=_money(limits.weekly),
            per_minute=_money(limits.per_minute),
            overridden=sorted(limits.overridden),
            action=limits.action,
            thresholds=[str(t) for t in limits.thresholds],
            model=limits.model,
        )
