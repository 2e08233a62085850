"""An error names the caller's bad value, but never more than a short repr
of it: a megabyte string or an int too large to turn into text (Python
refuses ``repr`` of one over 4,300 digits) still gets its typed error, with
a message of a few dozen characters, and changes nothing. Both backends.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from conftest import MakeBudget, deployment_state
from spendgate import BudgetManager, InvalidArgumentError

HUGE_TEXT = "x" * 1_000_000
HUGE_INT = -(10**5000)

Call = Callable[[BudgetManager, Any], Awaitable[object]]

CALLS: dict[str, Call] = {
    "reserve ttl_seconds": lambda b, v: b.reserve("ada", "1", ttl_seconds=v),
    "set_limits scope": lambda b, v: b.set_limits(v, "x", daily="1"),
    "set_limits action": lambda b, v: b.set_limits("user", "ada", daily=1, action=v),
    "set_limits thresholds": lambda b, v: b.set_limits(
        "user", "ada", daily=1, action="warn", thresholds=[v]
    ),
    "adjust_usage window": lambda b, v: b.adjust_usage("user", "ada", "1", window=v),
    "adjust_usage at": lambda b, v: b.adjust_usage("user", "ada", "1", at=v),
    "adjust_usage reason": lambda b, v: b.adjust_usage("user", "ada", "1", reason=[v]),
    "add_credits kind": lambda b, v: b.add_credits("ada", "1", kind=v),
    "add_credits priority": lambda b, v: b.add_credits("ada", "1", priority=v),
    "list_transactions limit": lambda b, v: b.list_transactions("ada", limit=v),
    "get_pricing version": lambda b, v: b.get_pricing(v),
}


@pytest.mark.parametrize("value", [HUGE_TEXT, HUGE_INT], ids=["text", "int"])
@pytest.mark.parametrize("call", list(CALLS))
async def test_a_huge_bad_value_gets_its_typed_error_in_a_short_message(
    make_budget: MakeBudget, call: str, value: Any
) -> None:
    budget = make_budget()
    with pytest.raises(InvalidArgumentError) as refused:
        await CALLS[call](budget, value)
    assert len(str(refused.value)) < 200
    assert await deployment_state(budget) == {}


async def test_an_unknown_fixed_job_is_named_briefly(make_budget: MakeBudget) -> None:
    budget = make_budget()
    await budget.publish_pricing(
        {"version": 1, "models": {"_default": "0"}, "fixed": {"report": "0.5"}}
    )
    with pytest.raises(InvalidArgumentError) as refused:
        await budget.deduct_fixed("ada", HUGE_TEXT)
    assert len(str(refused.value)) < 200
