"""A short narrated walkthrough on the embedded default: ``spendgate demo``.

admit -> spend -> refused at the cap (with the reason and reset time) -> a
lease reserved and settled -> an idempotent replay that charges nothing.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

from spendgate.config import BudgetConfig
from spendgate.errors import BudgetExceededError
from spendgate.manager import BudgetManager


def _say(text: str) -> None:
    print(text, flush=True)


async def walkthrough(config: BudgetConfig | None = None) -> None:
    """Run the walkthrough; raises if any step does not behave as narrated."""
    config = config or BudgetConfig(
        key_prefix="spendgate-demo",
        daily_user_limit=Decimal("1.00"),
        daily_project_limit=Decimal("50"),
        daily_global_limit=Decimal("500"),
    )
    user, project = "ada@example.com", "chatbot"
    async with BudgetManager(config) as budget:
        store = "the embedded in-process store" if budget.embedded else "Redis"
        _say(
            f"spendgate demo on {store}: user {user!r} "
            f"may spend 1.00 {config.unit} a day.\n"
        )

        _say("1. Admission: may Ada spend an estimated 0.40?")
        await budget.check_availability(user, project, Decimal("0.40"))
        _say("   admitted (one round trip, nothing changed yet).\n")

        _say("2. The call happened and cost 0.40: record the fact.")
        record = await budget.record_spend(
            user, Decimal("0.40"), project, model="gpt-4o-mini", idempotency_key="req-1"
        )
        usage = await budget.get_usage(user, project)
        _say(
            f"   ledger entry {record.entry_id}; "
            f"spent today: {usage['user'].daily.spent}\n"
        )

        _say("3. Another call of 0.40, then a third would pass the cap.")
        await budget.record_spend(user, Decimal("0.40"), project, model="gpt-4o-mini")
        try:
            await budget.check_availability(user, project, Decimal("0.40"))
        except BudgetExceededError as refused:
            _say(
                f"   refused: {refused.scope} {refused.window} cap {refused.limit}, "
                f"spent {refused.spent}, requested {refused.requested}"
            )
            _say(f"   the window resets at {refused.resets_at:%Y-%m-%d %H:%M} UTC\n")
        else:
            raise AssertionError("the cap did not refuse")

        _say("4. A lease: hold 0.15 while the call runs, settle at the real cost.")
        async with budget.lease(user, Decimal("0.15"), project_id=project) as lease:
            held = (await budget.get_usage(user, project))["user"].held
            _say(
                f"   lease {lease.id} holds {held}; "
                f"it expires at {lease.expires_at:%H:%M:%S} UTC"
            )
            lease.actual_cost = Decimal("0.1234567")  # rounds up to 0.123457
            lease.model = "gpt-4o-mini"
        usage = await budget.get_usage(user, project)
        _say(
            f"   settled: spent today {usage['user'].daily.spent}, "
            f"held {usage['user'].held}\n"
        )

        _say("5. A retry of request 'req-1' (same idempotency key) charges nothing.")
        replay = await budget.record_spend(
            user, Decimal("0.40"), project, model="gpt-4o-mini", idempotency_key="req-1"
        )
        after = await budget.get_usage(user, project)
        assert replay.replayed and replay.entry_id == record.entry_id
        assert after["user"].daily.spent == usage["user"].daily.spent
        _say(
            f"   replayed entry {replay.entry_id}; "
            f"spent today still {after['user'].daily.spent}"
        )
        _say(f"   remaining today: {after['user'].daily.remaining} {config.unit}\n")
        _say("Done: every step above was one atomic Lua script, one round trip.")


def main() -> None:
    asyncio.run(walkthrough())
