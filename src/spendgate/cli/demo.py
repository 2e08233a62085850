"""A short narrated walkthrough on the embedded default: ``spendgate demo``.

admit -> spend -> refused at the cap (with the reason and reset time) -> a
lease reserved and settled -> an idempotent replay that charges nothing.
"""

from __future__ import annotations

import argparse
import asyncio
from decimal import Decimal
from typing import TYPE_CHECKING

from spendgate.config import BudgetConfig
from spendgate.errors import BudgetExceededError, ExitCode
from spendgate.manager import BudgetManager
from spendgate.models import SpendRecord

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def add_demo(sub: SubParsers) -> None:
    parser = sub.add_parser(
        "demo", help="a narrated walkthrough on the embedded store (no Redis needed)"
    )
    parser.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    main()
    return ExitCode.OK


def _say(text: str) -> None:
    print(text, flush=True)


#: who the walkthrough is about
USER, PROJECT = "ada@example.com", "chatbot"


async def walkthrough(config: BudgetConfig | None = None) -> None:
    """Run the walkthrough; raises if any step does not behave as narrated."""
    config = config or BudgetConfig(
        key_prefix="spendgate-demo",
        daily_user_limit=Decimal("1.00"),
        daily_project_limit=Decimal("50"),
        daily_global_limit=Decimal("500"),
    )
    async with BudgetManager(config) as budget:
        store = "the embedded in-process store" if budget.embedded else "Redis"
        _say(
            f"spendgate demo on {store}: user {USER!r} "
            f"may spend 1.00 {config.unit} a day.\n"
        )
        first = await _admit_spend_refuse(budget)
        await _lease_and_replay(budget, first)
        _say("Done: every step above was one atomic Lua script, one round trip.")


async def _admit_spend_refuse(budget: BudgetManager) -> SpendRecord:
    """Steps 1 to 3; returns the first spend's record (step 5 replays it)."""
    _say("1. Admission: may Ada spend an estimated 0.40?")
    await budget.check_availability(USER, PROJECT, Decimal("0.40"))
    _say("   admitted (one round trip, nothing changed yet).\n")

    _say("2. The call happened and cost 0.40: record the fact.")
    record = await budget.record_spend(
        USER, Decimal("0.40"), PROJECT, model="gpt-4o-mini", idempotency_key="req-1"
    )
    usage = await budget.get_usage(USER, PROJECT)
    _say(
        f"   ledger entry {record.entry_id}; spent today: {usage['user'].daily.spent}\n"
    )

    _say("3. Another call of 0.40, then a third would pass the cap.")
    await budget.record_spend(USER, Decimal("0.40"), PROJECT, model="gpt-4o-mini")
    try:
        await budget.check_availability(USER, PROJECT, Decimal("0.40"))
    except BudgetExceededError as refused:
        _say(
            f"   refused: {refused.scope} {refused.window} cap {refused.limit}, "
            f"spent {refused.spent}, requested {refused.requested}"
        )
        _say(f"   the window resets at {refused.resets_at:%Y-%m-%d %H:%M} UTC\n")
    else:
        raise AssertionError("the cap did not refuse")
    return record


async def _lease_and_replay(budget: BudgetManager, first: SpendRecord) -> None:
    """Steps 4 and 5: a lease settled at the real cost, then a free replay."""
    _say("4. A lease: hold 0.15 while the call runs, settle at the real cost.")
    async with budget.lease(USER, Decimal("0.15"), project_id=PROJECT) as lease:
        held = (await budget.get_usage(USER, PROJECT))["user"].held
        _say(
            f"   lease {lease.id} holds {held}; "
            f"it expires at {lease.expires_at:%H:%M:%S} UTC"
        )
        lease.actual_cost = Decimal("0.1234567")  # rounds up to 0.123457
        lease.model = "gpt-4o-mini"
    usage = await budget.get_usage(USER, PROJECT)
    _say(
        f"   settled: spent today {usage['user'].daily.spent}, "
        f"held {usage['user'].held}\n"
    )

    _say("5. A retry of request 'req-1' (same idempotency key) charges nothing.")
    replay = await budget.record_spend(
        USER, Decimal("0.40"), PROJECT, model="gpt-4o-mini", idempotency_key="req-1"
    )
    after = await budget.get_usage(USER, PROJECT)
    assert replay.replayed and replay.entry_id == first.entry_id
    assert after["user"].daily.spent == usage["user"].daily.spent
    _say(
        f"   replayed entry {replay.entry_id}; "
        f"spent today still {after['user'].daily.spent}"
    )
    _say(f"   remaining today: {after['user'].daily.remaining} {budget.config.unit}\n")


def main() -> None:
    asyncio.run(walkthrough())
