"""Event delivery when things go wrong: retries, dead letters, consumer
groups and dispatchers that die.

How: on both backends, facts go through ``BudgetManager`` or events are
appended to the events stream with the protocol's fields (``add_event``, in
tests/events_helpers.py); an ``EventDispatcher`` is driven pass by pass
(``drain``) or the manager's own is used. Failures are real exceptions
raised by handlers, retried with a tiny backoff; a "killed" dispatcher is
one that stopped renewing its heartbeat while holding events. Checked: the
backoff doubles with jitter up to its maximum; a failing handler is retried
until it succeeds; a handler failing every attempt is dead-lettered alone
(the letter names it, the event is acknowledged) and a malformed event is
dead-lettered while the next is delivered; one group shares the events and
each group gets them all; a dead dispatcher's events, and events idle on a
consumer without a heartbeat, are delivered by another; stopped mid-retry,
an event stays pending for a restart. Nothing is asserted about durations:
waits are bounded loops on a state.
"""

from __future__ import annotations

import asyncio
import json

import redis.asyncio as aioredis

from conftest import MakeBudget
from events_helpers import FAST, _xlen_is, add_event, config_of, until
from spendgate.events import Event, EventDispatcher, EventHandlers, RetryPolicy
from spendgate.events.clients import sibling_client

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
