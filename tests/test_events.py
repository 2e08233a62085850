"""Event delivery to handlers through the manager's own dispatcher:
``budget.events.on`` with no other set-up.

How: on both backends, facts go through ``BudgetManager`` and threshold-like
events are appended to the events stream with the protocol's fields
(``add_event``, in tests/events_helpers.py); handlers record what they get.
Checked: a registered handler gets each fact's event (its id, scope, data),
sync handlers off the loop and async ones on it; the fact events rebuild the
balance; an events stream entry arrives with its stream id and is deleted
once acknowledged; handlers only for other events leave the ledger stream
without a group; a manager without handlers imports nothing of the events
package; handlers registered before any loop start with the first call;
``on`` checks its arguments; 300 concurrent charges each deliver their event
once; a script's own event reaches its handler; streams deleted under a
blocked dispatcher are read again. Nothing is asserted about durations:
waits are bounded loops on a state. Retries, dead letters, groups and dead
dispatchers are in tests/test_events_recovery.py.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections import Counter
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from conftest import MakeBudget
from events_helpers import _xlen_is, add_event, until
from spendgate import BudgetConfig, BudgetManager, InvalidArgumentError
from spendgate.core.protocol import EventType
from spendgate.events import Event, EventHandlers

# -- the manager's dispatcher ---------------------------------------------------------


async def test_a_registered_handler_gets_fact_events_with_no_other_set_up(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget()
    got: list[Event] = []
    budget.events.on("credits.deducted", got.append)
    record = await budget.record_spend("ada", "0.25", model="gpt-4o", project_id="p1")
    await until(lambda: len(got) == 1, "the deducted event")
    event = got[0]
    assert (event.id, event.type, event.user_id) == (
        record.entry_id,
        "credits.deducted",
        "ada",
    )
    assert (event.scope, event.scope_id, event.occurred_at) == (
        "user",
        "ada",
        record.occurred_at,
    )
    assert event.data == {
        "kind": "spend",
        "amount": "0.25",
        "model": "gpt-4o",
        "project_id": "p1",
    }
    task = budget._dispatch_task
    assert task is not None and not task.done()
    await budget.aclose()
    assert task.done() and budget._dispatch_task is None


async def test_sync_and_async_handlers_are_both_called_sync_off_the_loop(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget()
    loop_thread = threading.current_thread()
    sync_threads: list[threading.Thread] = []
    got_async: list[Event] = []

    def on_sync(event: Event) -> None:
        sync_threads.append(threading.current_thread())

    @budget.events.on("credits.added")
    async def on_async(event: Event) -> None:
        got_async.append(event)

    budget.events.on("*", on_sync)
    record = await budget.add_credits("ada", "5")
    await until(lambda: got_async and sync_threads, "both handlers")
    assert got_async[0].id == record.entry_id
    assert got_async[0].data["amount"] == "5"
    assert sync_threads[0] is not loop_thread  # a sync handler runs in a thread


async def test_fact_events_rebuild_the_balance(make_budget: MakeBudget) -> None:
    budget = make_budget()
    got: dict[str, Event] = {}
    budget.events.on("*", lambda e: got.setdefault(e.id, e))
    credit = await budget.add_credits("ada", "10")
    charges = [await budget.deduct("ada", "1") for _ in range(3)]
    spend = await budget.record_spend("ada", "0.5")
    lease = await budget.reserve("ada", "2")
    settle = await budget.settle(lease, "1.25")
    ids = {credit.entry_id, spend.entry_id, settle.entry_id}
    ids |= {c.entry_id for c in charges}
    await until(lambda: ids <= set(got), "every fact's event")
    kinds = Counter(e.type for e in got.values())
    assert kinds == {"credits.added": 1, "credits.deducted": 5}
    rebuilt = sum(
        Decimal(e.data["amount"]) * (1 if e.type == "credits.added" else -1)
        for e in got.values()
    )
    assert rebuilt == Decimal("10") - 3 - Decimal("0.5") - Decimal("1.25")
    assert got[settle.entry_id].data["lease_id"] == lease.id
    assert got[settle.entry_id].data["kind"] == "settle"


async def test_a_team_pools_fact_events_name_the_team_as_their_scope(
    make_budget: MakeBudget,
) -> None:
    # A team's credit and its members' charges move the pool, not a user's
    # balance: a consumer rebuilding balances by (scope, scope_id) must see
    # the team there, the member as user_id.
    budget = make_budget()
    got: dict[str, Event] = {}
    budget.events.on("*", lambda e: got.setdefault(e.id, e))
    await budget.create_team("eng", initial_balance="10")
    await budget.add_team_member("eng", "ada")
    credit = await budget.credit_team("eng", "5")
    charge = await budget.record_spend("ada", "2", team_id="eng")
    back = await budget.refund(charge.entry_id, "0.5")
    own = await budget.record_spend("ada", "1")
    ids = {credit.entry_id, charge.entry_id, back.entry_id, own.entry_id}
    await until(lambda: ids <= set(got), "every fact's event")
    for entry_id, user in (
        (credit.entry_id, None),
        (charge.entry_id, "ada"),
        (back.entry_id, "ada"),
    ):
        event = got[entry_id]
        assert (event.scope, event.scope_id, event.user_id) == ("team", "eng", user)
    assert (got[own.entry_id].scope, got[own.entry_id].scope_id) == ("user", "ada")
    pool = sum(
        Decimal(e.data["amount"]) * (-1 if e.type == "credits.deducted" else 1)
        for e in got.values()
        if (e.scope, e.scope_id) == ("team", "eng")
    )
    assert pool == (await budget.get_team("eng")).balance == Decimal("13.5")
    # a refund's window is the day of the counters it lowered; a charge has none
    day = charge.occurred_at.strftime("%Y-%m-%d")
    assert (got[back.entry_id].window, got[charge.entry_id].window) == (day, None)


async def test_events_stream_entries_arrive_with_their_stream_id(
    make_budget: MakeBudget, redis_client: aioredis.Redis
) -> None:
    budget = make_budget()
    got: list[Event] = []
    budget.events.on("credits.cap_reached", got.append)
    await budget.open()
    sid = await add_event(redis_client, budget.keys)
    await until(lambda: bool(got), "the cap event")
    event = got[0]
    assert (event.id, event.type, event.window) == (sid, "credits.cap_reached", "daily")
    # floats of a script's JSON arrive exact
    assert event.data == {"limit": "10", "threshold": Decimal("1.0")}
    # only group: acknowledged means deleted
    await until(
        lambda: _xlen_is(redis_client, budget.keys.events, 0), "the entry deleted"
    )


async def test_handlers_only_for_other_events_leave_the_ledger_alone(
    make_budget: MakeBudget, redis_client: aioredis.Redis
) -> None:
    budget = make_budget()
    got: list[Event] = []
    budget.events.on("credits.cap_warning", got.append)
    await budget.record_spend("ada", "1")
    sid = await add_event(redis_client, budget.keys, EventType.CAP_WARNING)
    await until(lambda: bool(got), "the warning")
    assert got[0].id == sid
    # no group on the ledger: the flusher deletes as it always did
    groups = await redis_client.xinfo_groups(budget.keys.ledger)
    assert groups == []


async def test_a_manager_without_handlers_runs_and_imports_nothing() -> None:
    code = (
        "import asyncio, sys\n"
        "from spendgate import BudgetManager, BudgetConfig\n"
        "async def main():\n"
        "    c = BudgetConfig(key_prefix='noev', daily_user_limit=None)\n"
        "    b = BudgetManager(c)\n"
        "    await b.record_spend('ada', 1)\n"
        "    assert b._dispatch_task is None\n"
        "    assert await b.redis.xinfo_groups(b.keys.ledger) == []\n"
        "    await b.aclose()\n"
        "asyncio.run(main())\n"
        "assert not any(m.startswith('spendgate.events') for m in sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_handlers_registered_before_any_loop_start_with_the_first_call() -> None:
    budget = BudgetManager(
        BudgetConfig(key_prefix="early-events", daily_user_limit=None)
    )  # the embedded store
    got: list[Event] = []
    budget.events.on("credits.deducted", got.append)
    assert budget._dispatch_task is None

    async def main() -> str:
        record = await budget.record_spend("ada", "1")
        await until(lambda: bool(got), "the event")
        await budget.aclose()
        return record.entry_id

    assert asyncio.run(main()) == got[0].id


async def test_on_checks_its_arguments(make_budget: MakeBudget) -> None:
    budget = make_budget()
    with pytest.raises(InvalidArgumentError, match="unknown event type"):
        budget.events.on("credits.spent", print)
    with pytest.raises(TypeError):
        budget.events.on("credits.added", "not callable")  # type: ignore[call-overload]
    assert not budget.events and budget._dispatch_task is None
    handlers = EventHandlers()
    handlers.on("credits.added", print)
    handlers.off("credits.added", print)
    assert len(handlers) == 0


async def test_300_concurrent_charges_each_deliver_their_event(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget()
    got: list[str] = []
    budget.events.on("credits.deducted", lambda e: got.append(e.id))
    records = await asyncio.gather(
        *(budget.record_spend(f"u{i % 7}", "0.01") for i in range(300))
    )
    expected = {r.entry_id for r in records}
    await until(lambda: set(got) >= expected, "300 events")
    assert len(got) == 300  # no failure, so no event twice


async def test_a_scripts_own_event_reaches_its_handler(make_budget: MakeBudget) -> None:
    # use_feature with action "warn" writes credits.cap_warning in its script
    budget = make_budget()
    got: list[Event] = []
    budget.events.on("credits.cap_warning", got.append)
    await budget.set_plan(
        "pro",
        features={"image_gen": True},
        feature_limits={
            "image_gen": {"max_calls": 2, "period": "monthly", "action": "warn"}
        },
    )
    await budget.assign_plan("ada", "pro")
    for _ in range(4):
        await budget.use_feature("ada", "image_gen")
    await until(lambda: bool(got), "the warning")
    [event] = got
    assert (event.type, event.user_id, event.scope, event.window) == (
        "credits.cap_warning",
        "ada",
        "user",
        "monthly",
    )
    assert event.data["feature"] == "image_gen" and event.data["used"] == 3


async def test_the_streams_deleted_under_a_blocked_dispatcher_are_read_again(
    make_budget: MakeBudget, redis_client: aioredis.Redis
) -> None:
    # (Redis 7 answers a read blocked on a stream that is deleted with
    # "UNBLOCKED the stream key no longer exists"; with no group left, the
    # next read is NOGROUP: both mean "make the groups again", never "stop")
    budget = make_budget()
    got: list[Event] = []
    budget.events.on("credits.deducted", got.append)
    await budget.record_spend("ada", "0.25")
    await until(lambda: len(got) == 1, "the first event")
    await asyncio.sleep(0.05)  # (the dispatcher blocks on the streams again)
    await redis_client.delete(budget.keys.ledger, budget.keys.events)
    second = await budget.record_spend("ada", "0.50")
    await until(lambda: len(got) == 2, "the event after the streams were deleted")
    assert got[1].id == second.entry_id
    task = budget._dispatch_task
    assert task is not None and not task.done()
