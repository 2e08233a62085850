"""The bench's ``deduct``: a 5-dimension price book (model, tools, search,
cache, fixed: bursar's format) published and active, every user funded, and
each call priced by the book and charged in one script.

Kept apart from :mod:`bench.runner`'s core workload: an older spendgate
(``bench.versus``) has no ``deduct``, and this module is only used when the
version measured has one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

#: the price book: every dimension of bursar's format in use
PRICE_BOOK: dict[str, Any] = {
    "version": 1,
    "models": {
        "gpt-4o": "input_tokens * 0.0000025 + output_tokens * 0.00001",
        "_default": "input_tokens * 0.000001 + output_tokens * 0.000003",
    },
    "tools": {"web_search": "tool_calls * 0.01", "_default": "tool_calls * 0"},
    "search": {"costs": "search_queries * 0.005 + search_results * 0.0005"},
    "cache": {"discount": "-cache_read_tokens * 0.0000012"},
    "fixed": {"batch_job": 20},
    "min_balance": 0,
}
#: what each user is given to spend from
FUNDS = "1000000"


def usage() -> Any:
    """The usage every timed deduct prices: all five dimensions."""
    from spendgate import ToolCall, UsageMetrics

    return UsageMetrics(
        model="gpt-4o",
        input_tokens=1200,
        output_tokens=350,
        cache_read_tokens=400,
        tool_calls=(ToolCall("web_search"),),
        search_queries=1,
        search_results=5,
    )


def supported(budget: Any) -> bool:
    """Whether this version of spendgate has ``deduct`` and price books."""
    return hasattr(budget, "deduct") and hasattr(budget, "publish_pricing")


async def prepare(budget: Any, users: list[str]) -> None:
    """Publish and activate the book; fund every user."""
    await budget.publish_pricing(PRICE_BOOK, label="bench")
    for user in users:
        await budget.add_credits(user, FUNDS)


def deduct_op(
    budget: Any, users: list[str], projects: list[str | None]
) -> Callable[[int], Awaitable[object]]:
    """Call ``i`` deducts the usage for user ``i`` and project ``i``."""
    nu, np_ = len(users), len(projects)
    metrics = usage()

    async def deduct(i: int) -> object:
        return await budget.deduct(users[i % nu], metrics, projects[i % np_])

    return deduct


def plans_supported(budget: Any) -> bool:
    """Whether this version of spendgate has plans whose allowance a
    ``deduct`` draws on."""
    return hasattr(budget, "assign_plan") and hasattr(budget, "set_plan")


#: the plan of ``deduct (plan)``'s users: an allowance no timed run uses up,
#: so every timed deduct draws on it (the allowance path), with a
#: ``_default`` rate override (bursar's README shape)
PLAN_ALLOWANCE = "1000000"


async def prepare_plan(budget: Any, users: list[str]) -> None:
    """In ``budget`` (a deployment of its own: a plan existing changes what
    every other user's deduct sends): publish the book, set the plan, put
    every user on it and fund them."""
    await prepare(budget, users)
    await budget.set_plan(
        "pro",
        free_allowance=PLAN_ALLOWANCE,
        rate_overrides={"_default": "input_tokens * 0.000002"},
    )
    for user in users:
        await budget.assign_plan(user, "pro")
