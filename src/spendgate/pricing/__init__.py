"""Pricing: what a model call costs. LiteLLM is imported on first use, never
by ``import spendgate``."""

from __future__ import annotations

from spendgate.pricing.catalog import ModelPrice, Pricing

__all__ = ["ModelPrice", "Pricing"]
