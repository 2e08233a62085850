"""Pricing: what a model call costs. LiteLLM is imported on first use, never
by ``import spendgate``."""

from __future__ import annotations

from spendgate.pricing.catalog import Pricing
from spendgate.pricing.rates import ModelPrice

__all__ = ["ModelPrice", "Pricing"]
