"""The credits' steps: a price book and deduct; grants, a refund; a plan."""

from __future__ import annotations

from decimal import Decimal

from spendgate.cli.demo.say import say
from spendgate.manager import BudgetManager

#: the demo's price book, in bursar's format
DEMO_BOOK = {
    "version": 1,
    "models": {
        "gpt-4o": "input_tokens * 0.0000025 + output_tokens * 0.00001",
        "_default": "input_tokens * 0.000001 + output_tokens * 0.000003",
    },
    "tools": {"web_search": "tool_calls * 0.01"},
    "fixed": {"batch_job": 0.75},
}


async def priced_usage(budget: BudgetManager) -> None:
    """Step 6: a price book, prepaid credits and deduct."""
    from spendgate import InsufficientCreditsError, ToolCall, UsageMetrics

    say("6. Priced usage: publish a price book (bursar's format), fund Bob, deduct.")
    version = await budget.publish_pricing(DEMO_BOOK, label="demo")
    await budget.add_credits("bob", Decimal("0.5"))
    usage = UsageMetrics(
        model="gpt-4o",
        input_tokens=1200,
        output_tokens=300,
        tool_calls=(ToolCall(name="web_search"),),
    )
    charged = await budget.deduct("bob", usage, idempotency_key="job-7")
    assert charged.breakdown is not None and charged.price_version == version
    say(
        f"   version {version} priced it {charged.amount} (model "
        f"{charged.breakdown.model.normalize()} + tools "
        f"{charged.breakdown.tools.normalize()}); balance {charged.balance_after}"
    )
    try:
        await budget.deduct_fixed("bob", "batch_job")
    except InsufficientCreditsError as short:
        say(f"   a batch_job (0.75) is refused: {short.limit} left; nothing changed\n")
    else:
        raise AssertionError("the balance did not refuse")


async def plan_and_features(budget: BudgetManager) -> None:
    """Step 7: a plan with a limited feature, assigned to Bob."""
    from spendgate import FeatureLimitExceededError

    say("7. Plans: 'pro' lets its users generate 2 images a month; Bob joins it.")
    await budget.set_plan(
        "pro",
        name="Pro",
        free_allowance=Decimal(5),
        features={"image_gen": True, "max_concurrency": 4},
        feature_limits={
            "image_gen": {"max_calls": 2, "period": "monthly", "action": "deny"}
        },
    )
    plan = await budget.assign_plan("bob", "pro")
    say(f"   Bob's cycle started now; it renews at {plan.resets_at:%Y-%m-%d %H:%M} UTC")
    for _ in range(2):
        used = await budget.use_feature("bob", "image_gen")
    say(f"   two images: {used.remaining} left this month")
    try:
        await budget.use_feature("bob", "image_gen")
    except FeatureLimitExceededError:
        say("   a third is refused, counted atomically in one script\n")
    else:
        raise AssertionError("the feature limit did not refuse")
