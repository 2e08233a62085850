"""The request path's extras and the operator's tools: fit to budget, a
streaming hold, spend velocity; a correction, the transactions, events."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from spendgate.cli.demo.say import USER, say
from spendgate.errors import BudgetExceededError
from spendgate.manager import BudgetManager

#: Carol, who is at the request path's limits
CAROL = "carol"
#: Dave, whose cap warns instead of refusing
DAVE = "dave"


async def stream_fit_and_velocity(budget: BudgetManager) -> None:
    """Step 8: reserve_up_to, extend, and a per-minute cap."""
    say("8. Request-path extras: Carol's day is capped at 1.00 too.")
    lease = await budget.reserve_up_to(CAROL, Decimal("5"), min_amount=Decimal("0.10"))
    say(f"   reserve_up_to(5, min 0.10) holds what fits: {lease.amount}")
    await budget.release(lease)
    lease = await budget.reserve(CAROL, Decimal("0.30"))
    await budget.extend(lease, Decimal("0.30"))  # a stream grows its hold
    say(f"   a streaming hold grew with extend: it now holds {lease.amount}")
    await budget.settle(lease, Decimal("0.45"))
    await budget.set_limits("user", CAROL, per_minute=Decimal("0.20"))
    await budget.record_spend(CAROL, Decimal("0.20"))
    try:
        await budget.check_availability(CAROL, None, Decimal("0.05"))
    except BudgetExceededError as refused:
        say(
            f"   a runaway loop meets its per-minute cap of {refused.limit}: "
            f"free again at {refused.resets_at:%H:%M:%S} UTC\n"
        )
    else:
        raise AssertionError("the per-minute cap did not refuse")


async def corrections_and_events(budget: BudgetManager) -> None:
    """Step 9: an event handler, an operator's correction, the ledger."""
    say("9. Events and corrections: a handler hears every charge.")
    heard: list[str] = []
    budget.events.on("credits.deducted", lambda event: heard.append(event.id))
    record = await budget.record_spend(USER, Decimal("0.05"), model="gpt-4o-mini")
    for _ in range(200):
        if record.entry_id in heard:
            break
        await asyncio.sleep(0.01)
    assert record.entry_id in heard, "the handler heard nothing"
    say(f"   the handler heard credits.deducted {record.entry_id}")
    warnings: list[str] = []
    budget.events.on("credits.cap_warning", lambda e: warnings.append(e.id))
    await budget.set_limits("user", DAVE, daily=Decimal("1.00"), action="warn")
    warned = await budget.record_spend(DAVE, Decimal("0.85"))
    crossed = ", ".join(str(w.threshold) for w in warned.warnings)
    for _ in range(200):
        if len(warnings) == 2:
            break
        await asyncio.sleep(0.01)
    assert len(warnings) == 2, "the cap warnings were not heard"
    say(
        f"   Dave's cap warns instead of refusing: 0.85 of 1.00 crossed {crossed},"
        " one credits.cap_warning event each"
    )
    fix = await budget.adjust_usage(
        "user", USER, Decimal("-0.40"), reason="a failed call was charged"
    )
    say(f"   an operator lowers Ada's day by 0.40: spent now {fix.spent_after}")
    recent = await budget.list_transactions(USER, limit=10)
    kinds = ", ".join(sorted({t.kind for t in recent}))
    say(f"   her ledger lists {len(recent)} entries ({kinds})\n")
