"""Pricing: what a call costs.

Two sources: a price book (:class:`PricingEngine`, bursar's format:
expressions per model, tool, search, cache and fixed job) and the model
catalog (:class:`Pricing`: static overrides, then LiteLLM's cost map).
LiteLLM is imported on first use, never by ``import spendgate``; the price
book's modules load on first use of one of their names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from spendgate.pricing.catalog import Pricing
from spendgate.pricing.rates import ModelPrice

if TYPE_CHECKING:
    from spendgate.pricing.engine import PricingEngine as PricingEngine
    from spendgate.pricing.expressions import Expression as Expression
    from spendgate.pricing.expressions import (
        compile_expression as compile_expression,
    )
    from spendgate.pricing.usage import CostBreakdown as CostBreakdown
    from spendgate.pricing.usage import ToolCall as ToolCall
    from spendgate.pricing.usage import UsageMetrics as UsageMetrics

#: the price book's names, and the module each loads from on first use
LAZY = {
    "CostBreakdown": "spendgate.pricing.usage",
    "Expression": "spendgate.pricing.expressions",
    "PricingEngine": "spendgate.pricing.engine",
    "ToolCall": "spendgate.pricing.usage",
    "UsageMetrics": "spendgate.pricing.usage",
    "compile_expression": "spendgate.pricing.expressions",
}

__all__ = ["ModelPrice", "Pricing", *LAZY]


def __getattr__(name: str) -> object:
    module = LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'spendgate.pricing' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
