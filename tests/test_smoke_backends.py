"""Smoke: both backends answer the core calls (the detailed suites follow)."""

from __future__ import annotations

from decimal import Decimal

from spendgate import BudgetManager


async def test_record_then_usage(budget: BudgetManager) -> None:
    await budget.record_spend("u1", "0.25", project_id="p1")
    usage = await budget.get_usage("u1", "p1")
    assert usage["user"].daily.spent == Decimal("0.25")
    assert usage["project"].monthly.spent == Decimal("0.25")
    assert usage["global"].daily.spent == Decimal("0.25")
