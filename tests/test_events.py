"""Event delivery to handlers: ``budget.events.on`` and the dispatcher.

How: on both backends, facts go through ``BudgetManager`` and threshold-like
events are appended to the events stream with the protocol's fields (the
scripts that will write them are another part's); handlers record what they
get. The manager's own dispatcher is used with no other set-up, or an
``EventDispatcher`` is driven pass by pass (``drain``). Failures are real
exceptions raised by handlers, retried with a tiny backoff; a "killed"
dispatcher is one that stopped renewing its heartbeat while holding events.
Nothing is asserted about durations: waits are bounded loops on a state.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis

from conftest import MakeBudget
from spendgate import BudgetConfig, BudgetManager, InvalidArgumentError
from spendgate.core.keys import Keys
from spendgate.core.protocol import EVENT_FIELDS, EventType
from spendgate.events import Event, EventDispatcher, EventHandlers, RetryPolicy
from spendgate.events.clients import sibling_client

#: settings that make retries quick
FAST = {
    "events_backoff_seconds": 0.001,
    "events_max_backoff_seconds": 0.005,
}


async def until(check: Callable[[], Awaitable[Any] | Any], what: str) -> None:
    """Wait (bounded) until ``check()`` is true."""
    for _ in range(2000):
        outcome = check()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


async def add_event(
    redis: aioredis.Redis,
    keys: Keys,
    kind: str = EventType.CAP_REACHED,
    **values: Any,
) -> str:
    """Append an event as a script would (the protocol's fields); its id."""
    attrs = {
        "type": kind,
        "occurred_at": 1_773_576_000_000,
        "user_id": "ada",
        "scope": "user",
        "scope_id": "ada",
        "window": "daily",
        "data": json.dumps({"limit": "10", "threshold": 1.0}),
        **values,
    }
    fields = {f.name: attrs[f.attribute] for f in EVENT_FIELDS if f.attribute in attrs}
    sid = await redis.xadd(keys.events, fields)  # type: ignore[arg-type]
    return sid.decode()


def config_of(budget: BudgetManager, **settings: Any) -> BudgetConfig:
    return budget.config.model_copy(update={**FAST, **settings})


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


async def _xlen_is(redis: aioredis.Redis, key: str, n: int) -> bool:
    return int(await redis.xlen(key)) == n


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


# -- retries, dead letters -----------------------------------------------------------


def test_backoff_doubles_with_jitter_up_to_the_maximum() -> None:
    policy = RetryPolicy(max_attempts=9, backoff_seconds=1, max_backoff_seconds=5)
    for failures, full in [(1, 1), (2, 2), (3, 4), (4, 5), (8, 5)]:
        for _ in range(50):
            assert full / 2 <= policy.delay(failures) <= full


async def test_a_failing_handler_is_retried_until_it_succeeds(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(**FAST, events_max_attempts=5)
    calls: list[str] = []

    async def flaky(event: Event) -> None:
        calls.append(event.id)
        if len(calls) < 4:
            raise RuntimeError("not yet")

    budget.events.on("credits.deducted", flaky)
    record = await budget.record_spend("ada", "1")
    await until(lambda: len(calls) == 4, "the fourth attempt")
    assert set(calls) == {record.entry_id}
    await until(lambda: budget.event_dispatcher is not None, "the dispatcher")
    dispatcher = budget.event_dispatcher
    assert dispatcher is not None
    await until(lambda: dispatcher.delivered_total == 1, "the delivery counted")
    assert dispatcher.dead_lettered_total == 0


async def test_a_handler_failing_every_attempt_is_dead_lettered_alone(
    make_budget: MakeBudget, redis_client: aioredis.Redis
) -> None:
    budget = make_budget(**FAST, events_max_attempts=3)
    failing: list[str] = []
    fine: list[str] = []

    def broken(event: Event) -> None:
        failing.append(event.id)
        raise ValueError("handler bug")

    budget.events.on("credits.deducted", broken)
    budget.events.on("credits.deducted", lambda e: fine.append(e.id))
    record = await budget.record_spend("ada", "1")
    dead_key = budget.keys.events_dead
    await until(lambda: _xlen_is(redis_client, dead_key, 1), "the dead letter")
    assert failing == [record.entry_id] * 3
    assert fine == [record.entry_id]  # the other handler is not called again
    [(_, letter)] = await redis_client.xrange(dead_key)
    assert letter[b"id"].decode() == record.entry_id
    assert letter[b"target"].decode().endswith("broken")
    assert (letter[b"n"], letter[b"src"]) == (b"3", b"ledger")
    assert letter[b"err"] == b"ValueError: handler bug"
    assert Event.from_dict(json.loads(letter[b"ev"])).id == record.entry_id
    # dead-lettered means done: acknowledged
    pending = await redis_client.xpending(budget.keys.ledger, "spendgate-events")
    assert pending["pending"] == 0


async def test_a_malformed_event_is_dead_lettered_and_the_next_delivered(
    make_budget: MakeBudget, redis_client: aioredis.Redis
) -> None:
    budget = make_budget()
    keys = budget.keys
    await redis_client.xadd(keys.events, {"t": "soon", "d": "{"})
    good = await add_event(redis_client, keys)
    handlers = EventHandlers()
    got: list[str] = []
    handlers.on("*", lambda e: got.append(e.id))
    dispatcher = EventDispatcher(
        config_of(budget), handlers=handlers, redis=redis_client
    )
    assert await dispatcher.drain() == 2
    assert got == [good]
    [(_, letter)] = await redis_client.xrange(keys.events_dead)
    assert letter[b"target"] == b"-" and b"malformed" in letter[b"err"]


# -- groups, dead dispatchers ---------------------------------------------------------


async def test_one_group_shares_events_and_each_group_gets_them_all(
    make_budget: MakeBudget, redis_client: aioredis.Redis
) -> None:
    budget = make_budget()
    got: dict[str, list[str]] = {"a1": [], "a2": [], "b": []}

    def dispatcher(name: str, group: str) -> EventDispatcher:
        handlers = EventHandlers()
        handlers.on("*", lambda e: got[name].append(e.id))
        config = config_of(budget, events_batch_size=3)
        return EventDispatcher(
            config, handlers=handlers, redis=redis_client, group=group
        )

    a1, a2, b = dispatcher("a1", "A"), dispatcher("a2", "A"), dispatcher("b", "B")
    for d in (a1, a2, b):
        await d.streams.ensure_groups(facts=True)
    records = [await budget.record_spend("ada", "1") for _ in range(10)]
    ids = {r.entry_id for r in records}
    await asyncio.gather(a1.drain(), a2.drain(), b.drain())
    assert sorted(got["a1"] + got["a2"]) == sorted(ids)
    assert sorted(got["b"]) == sorted(ids)


async def test_a_dead_dispatchers_events_are_delivered_by_another(
    make_budget: MakeBudget, redis_client: aioredis.Redis
) -> None:
    budget = make_budget()
    config = config_of(budget, events_heartbeat_seconds=0.3)
    entered = asyncio.Event()

    async def stuck(event: Event) -> None:
        entered.set()
        await asyncio.Event().wait()  # hangs, like a frozen process

    first = EventHandlers()
    first.on("*", stuck)
    dying = EventDispatcher(
        config,
        handlers=first,
        redis=sibling_client(redis_client),
        close_redis=True,
        consumer="dying",
    )
    task = asyncio.create_task(dying.run())
    records = [await budget.record_spend("ada", "1") for _ in range(3)]
    sid = await add_event(redis_client, budget.keys)
    await asyncio.wait_for(entered.wait(), 30)
    # It stops renewing its heartbeat while holding events: as if killed.
    await dying.heartbeat.stop(end=False)
    heartbeat = budget.keys.dispatcher("dying")
    await until(lambda: _gone(redis_client, heartbeat), "the heartbeat expired")

    got: list[str] = []
    second = EventHandlers()
    second.on("*", lambda e: got.append(e.id))
    survivor = EventDispatcher(config, handlers=second, redis=redis_client)
    await survivor.drain()
    assert sorted(got) == sorted([r.entry_id for r in records] + [sid])
    for stream in (budget.keys.ledger, budget.keys.events):
        summary = await redis_client.xpending(stream, "spendgate-events")
        assert summary["pending"] == 0
    # forgotten once it held nothing
    members = await redis_client.smembers(budget.keys.dispatchers("spendgate-events"))
    assert b"dying" not in members
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _gone(redis: aioredis.Redis, key: str) -> bool:
    return not await redis.exists(key)


async def test_events_idle_on_a_consumer_without_heartbeat_are_claimed(
    make_budget: MakeBudget, redis_client: aioredis.Redis
) -> None:
    budget = make_budget()
    keys = budget.keys
    sid = await add_event(redis_client, keys)
    await redis_client.xgroup_create(keys.events, "spendgate-events", id="0")
    # a consumer that read and vanished, never keeping a heartbeat
    await redis_client.xreadgroup("spendgate-events", "ghost", {keys.events: ">"})
    got: list[str] = []
    handlers = EventHandlers()
    handlers.on("*", lambda e: got.append(e.id))
    config = config_of(budget, events_claim_idle_seconds=0.05)
    survivor = EventDispatcher(config, handlers=handlers, redis=redis_client)

    async def delivered() -> bool:
        await survivor.drain()
        return got == [sid]

    await until(delivered, "the ghost's event claimed")


async def test_stopped_mid_retry_the_event_stays_pending_for_a_restart(
    make_budget: MakeBudget, redis_client: aioredis.Redis
) -> None:
    budget = make_budget()
    sid = await add_event(redis_client, budget.keys)
    config = config_of(
        budget, events_backoff_seconds=3600, events_max_backoff_seconds=3600
    )
    failed = asyncio.Event()

    async def refuse(event: Event) -> None:
        failed.set()
        raise RuntimeError("down")

    handlers = EventHandlers()
    handlers.on("*", refuse)
    first = EventDispatcher(
        config, handlers=handlers, redis=redis_client, consumer="restarting"
    )
    task = asyncio.create_task(first.run())
    await asyncio.wait_for(failed.wait(), 30)
    first.stop()  # in the middle of an hour's backoff
    await asyncio.wait_for(task, 30)
    summary = await redis_client.xpending(budget.keys.events, "spendgate-events")
    assert summary["pending"] == 1

    got: list[str] = []
    again = EventHandlers()
    again.on("*", lambda e: got.append(e.id))
    restarted = EventDispatcher(
        config, handlers=again, redis=redis_client, consumer="restarting"
    )
    await restarted.drain()
    assert got == [sid]


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
