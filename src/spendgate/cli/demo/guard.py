"""The guard's steps: admission, spend, refusal, a lease, an idempotent replay."""

from __future__ import annotations

from decimal import Decimal

from spendgate.cli.demo.say import PROJECT, USER, say
from spendgate.errors import BudgetExceededError
from spendgate.manager import BudgetManager
from spendgate.models import SpendRecord


async def admit_spend_refuse(budget: BudgetManager) -> SpendRecord:
    """Steps 1 to 3; returns the first spend's record (step 5 replays it)."""
    say("1. Admission: may Ada spend an estimated 0.40?")
    await budget.check_availability(USER, PROJECT, Decimal("0.40"))
    say("   admitted (one round trip, nothing changed yet).\n")

    say("2. The call happened and cost 0.40: record the fact.")
    record = await budget.record_spend(
        USER, Decimal("0.40"), PROJECT, model="gpt-4o-mini", idempotency_key="req-1"
    )
    usage = await budget.get_usage(USER, PROJECT)
    say(
        f"   ledger entry {record.entry_id}; spent today: {usage['user'].daily.spent}\n"
    )

    say("3. Another call of 0.40, then a third would pass the cap.")
    await budget.record_spend(USER, Decimal("0.40"), PROJECT, model="gpt-4o-mini")
    try:
        await budget.check_availability(USER, PROJECT, Decimal("0.40"))
    except BudgetExceededError as refused:
        say(
            f"   refused: {refused.scope} {refused.window} cap {refused.limit}, "
            f"spent {refused.spent}, requested {refused.requested}"
        )
        say(f"   the window resets at {refused.resets_at:%Y-%m-%d %H:%M} UTC\n")
    else:
        raise AssertionError("the cap did not refuse")
    return record


async def lease_and_replay(budget: BudgetManager, first: SpendRecord) -> None:
    """Steps 4 and 5: a lease settled at the real cost, then a free replay."""
    say("4. A lease: hold 0.15 while the call runs, settle at the real cost.")
    async with budget.lease(USER, Decimal("0.15"), project_id=PROJECT) as lease:
        held = (await budget.get_usage(USER, PROJECT))["user"].held
        say(
            f"   lease {lease.id} holds {held}; "
            f"it expires at {lease.expires_at:%H:%M:%S} UTC"
        )
        lease.actual_cost = Decimal("0.1234567")  # rounds up to 0.123457
        lease.model = "gpt-4o-mini"
    usage = await budget.get_usage(USER, PROJECT)
    say(
        f"   settled: spent today {usage['user'].daily.spent}, "
        f"held {usage['user'].held}\n"
    )

    say("5. A retry of request 'req-1' (same idempotency key) charges nothing.")
    replay = await budget.record_spend(
        USER, Decimal("0.40"), PROJECT, model="gpt-4o-mini", idempotency_key="req-1"
    )
    after = await budget.get_usage(USER, PROJECT)
    assert replay.replayed and replay.entry_id == first.entry_id
    assert after["user"].daily.spent == usage["user"].daily.spent
    say(
        f"   replayed entry {replay.entry_id}; "
        f"spent today still {after['user'].daily.spent}"
    )
    say(f"   remaining today: {after['user'].daily.remaining} {budget.config.unit}\n")
