"""Every fault of a price book at once, for ``spendgate pricing validate``.

Loading a book (:class:`~spendgate.pricing.engine.PricingEngine`) stops at
its first fault; a bursar book being migrated is fixed in one pass when each
expression spendgate refuses is named together. :func:`book_errors` compiles
every expression of the book on its own (``models``, ``tools``, ``search``,
``cache``, each plan's ``rate_overrides``), then loads the book with those
that failed set aside, for the first fault of any other kind.
"""

from __future__ import annotations

from typing import Any

from spendgate.errors import PricingConfigError
from spendgate.pricing import book
from spendgate.pricing.expressions import (
    METRIC_VARIABLES,
    TOOL_VARIABLES,
    compile_expression,
)

__all__ = ["book_errors"]

#: what stands in for an expression refused, so loading goes on past it
_STAND_IN = "0"


def book_errors(data: object) -> list[PricingConfigError]:
    """The faults of a book given as data: each expression refused, in the
    book's order, then the first other fault (``[]``: the book loads)."""
    from spendgate.pricing.engine import PricingEngine

    try:
        copy = book.plain(data)
    except PricingConfigError as exc:
        return [exc]
    errors: list[PricingConfigError] = []
    for container, key, where, variables in _expressions(copy):
        try:
            compile_expression(container[key], where, variables=variables)
        except PricingConfigError as exc:
            errors.append(exc)
            container[key] = _STAND_IN
    try:
        PricingEngine(copy)
    except PricingConfigError as exc:
        errors.append(exc)
    return errors


#: one expression's place: its mapping, its key there, where it sits in the
#: book (``models.gpt-4o``), and the variables it may read
Slot = tuple[dict[str, Any], str, str, frozenset[str]]


def _expressions(data: object) -> list[Slot]:
    """Every expression of the book, in its order."""
    if not isinstance(data, dict):
        return []
    slots: list[Slot] = []
    for name, variables in (("models", METRIC_VARIABLES), ("tools", TOOL_VARIABLES)):
        section = data.get(name)
        if isinstance(section, dict):
            slots += [(section, k, f"{name}.{k}", variables) for k in section]
    for name, key in (("search", "costs"), ("cache", "discount")):
        value = data.get(name)
        if isinstance(value, dict):  # bursar's README: {costs: ...}
            if key in value:
                slots.append((value, key, f"{name}.{key}", METRIC_VARIABLES))
        elif value is not None:  # bursar's code: the expression itself
            slots.append((data, name, name, METRIC_VARIABLES))
    plans = data.get("plans")
    for plan_id, plan in plans.items() if isinstance(plans, dict) else ():
        overrides = plan.get("rate_overrides") if isinstance(plan, dict) else None
        if isinstance(overrides, dict):
            where = f"plans.{plan_id}.rate_overrides."
            slots += [(overrides, k, where + k, METRIC_VARIABLES) for k in overrides]
    return slots
