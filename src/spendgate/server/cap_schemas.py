"""The HTTP side of cap actions: the action and thresholds a limits body
sets and shows, and the thresholds a charge's answer says it reached."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from spendgate.models import CapWarning

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
