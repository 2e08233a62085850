"""Events of a sharded deployment (``cluster_buckets``): every stream home's
(the root's and each bucket's) delivered, claimed and tailed.

How: on the two sharded backends of conftest.py (``sharded``: the real
Redis, 8 buckets; ``sharded-cluster``: the session's 3-master cluster, 16
buckets), 40 users whose buckets cover every bucket get charges (fact
events, in their bucket's ledger stream) and threshold-like events appended
to their bucket's events stream as a script would (``add_event``), plus one
event in the root's stream (what was written before sharding). Handlers and
a webhook receiver count what they get: each id exactly once. ``events
tail`` runs through ``spendgate.cli.main`` and, for ``--follow``, as a
process of its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from conftest import REDIS_URL, MakeBudget
from events_helpers import add_event, config_of, until
from spendgate import BudgetManager
from spendgate.cli import main
from spendgate.core.shards import bucket_of
from spendgate.events import Event, EventDispatcher, EventHandlers
from spendgate.events.webhook import WebhookSink
from webhook_helpers import SECRET, Receiver

#: 40 users whose buckets cover all 8 (and all 16) buckets
USERS = [f"u{i}" for i in range(40)]
GROUP = "spendgate-events"
SRC = Path(__file__).resolve().parent.parent / "src"


@pytest.fixture(
    params=[
        pytest.param("sharded", marks=pytest.mark.redis),
        pytest.param("sharded-cluster", marks=pytest.mark.redis),
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def spread_events(budget: BudgetManager, redis: aioredis.Redis) -> list[str]:
    """A charge and a cap event for each of :data:`USERS` in their buckets,
    and one cap event in the root's stream; every event id."""
    keys = budget.keys
    buckets = {bucket_of(user, budget.config.cluster_buckets) for user in USERS}
    assert buckets == set(range(budget.config.cluster_buckets))
    ids = []
    for user in USERS:
        ids.append((await budget.record_spend(user, "0.1")).entry_id)
        sid = await add_event(redis, keys.of(user), user_id=user, scope_id=user)
        # (each bucket's stream numbers its entries itself: its id names it)
        ids.append(keys.id_for(sid, user))
    ids.append(await add_event(redis, keys))  # the root's: its stream id alone
    assert len(set(ids)) == len(ids)
    return ids


async def pending_everywhere(budget: BudgetManager, redis: aioredis.Redis) -> int:
    """The group's pending entries over every home's two streams."""
    total = 0
    for home in budget.keys.stream_homes():
        for stream in (home.events, home.ledger):
            if await redis.exists(stream):
                total += (await redis.xpending(stream, GROUP))["pending"]
    return total


def collector() -> tuple[EventHandlers, list[str]]:
    handlers, got = EventHandlers(), []
    handlers.on("*", lambda event: got.append(event.id))
    return handlers, got


# -- delivery -----------------------------------------------------------------------


async def test_every_buckets_events_reach_a_handler_exactly_once(
    make_budget: MakeBudget, redis_client: aioredis.Redis
) -> None:
    budget = make_budget()
    got: list[Event] = []
    budget.events.on("*", got.append)  # the manager's own dispatcher
    ids = await spread_events(budget, redis_client)
    await until(lambda: len(got) >= len(ids), "every event delivered")
    await asyncio.sleep(0.3)  # (nothing more comes)
    assert Counter(e.id for e in got) == Counter(ids)
    assert {e.user_id for e in got} == {*USERS, "ada"}

    async def acknowledged() -> bool:
        return await pending_everywhere(budget, redis_client) == 0

    await until(acknowledged, "every event acknowledged")


async def test_a_webhook_gets_every_buckets_events_once_processed(
    make_budget: MakeBudget, redis_client: aioredis.Redis
) -> None:
    budget = make_budget()
    ids = await spread_events(budget, redis_client)
    with Receiver(fail_first=3) as receiver:
        dispatcher = EventDispatcher(
            config_of(budget),
            targets=[WebhookSink(receiver.url, SECRET)],
            redis=redis_client,
        )
        # (a batch per stream and home: several homes' entries in one pass)
        assert await dispatcher.drain() == len(ids)
        await dispatcher.aclose()
    assert receiver.processed == Counter(ids)
    assert sorted(set(receiver.received)) == sorted(ids)
    assert len(receiver.received) == len(ids) + 3  # only the failed ones again
    assert dispatcher.delivered_total == len(ids)
    assert await pending_everywhere(budget, redis_client) == 0
    # every events stream entry went once its only group took it
    for home in budget.keys.stream_homes():
        assert await redis_client.xlen(home.events) == 0


async def test_a_stopped_dispatchers_pending_events_of_every_home_go_to_another(
    make_budget: MakeBudget, redis_client: aioredis.Redis
) -> None:
    budget = make_budget()
    ids = await spread_events(budget, redis_client)
    config = config_of(
        budget, events_backoff_seconds=3600, events_max_backoff_seconds=3600
    )
    failed = asyncio.Event()

    async def refuse(event: Event) -> None:
        failed.set()
        raise RuntimeError("down")

    first = EventHandlers()
    first.on("*", refuse)
    stopping = EventDispatcher(config, handlers=first, redis=redis_client)
    task = asyncio.create_task(stopping.run())
    await asyncio.wait_for(failed.wait(), 30)
    # It read a batch of every home and is in an hour's backoff on the first.
    assert await pending_everywhere(budget, redis_client) == len(ids)
    stopping.stop()
    await asyncio.wait_for(task, 30)
    assert await pending_everywhere(budget, redis_client) == len(ids)

    handlers, got = collector()
    survivor = EventDispatcher(config, handlers=handlers, redis=redis_client)
    assert await survivor.drain() == len(ids)
    assert Counter(got) == Counter(ids)
    assert await pending_everywhere(budget, redis_client) == 0
    # forgotten in every home once it held nothing there
    name = stopping.consumer.encode()
    for home in budget.keys.stream_homes():
        assert name not in await redis_client.smembers(home.dispatchers(GROUP))


async def test_a_killed_dispatchers_events_are_claimed_in_every_home(
    make_budget: MakeBudget, redis_client: aioredis.Redis
) -> None:
    budget = make_budget()
    ids = await spread_events(budget, redis_client)
    config = config_of(budget, events_heartbeat_seconds=0.3)
    entered = asyncio.Event()

    async def stuck(event: Event) -> None:
        entered.set()
        await asyncio.Event().wait()  # hangs, like a frozen process

    first = EventHandlers()
    first.on("*", stuck)
    dying = EventDispatcher(config, handlers=first, redis=redis_client)
    task = asyncio.create_task(dying.run())
    await asyncio.wait_for(entered.wait(), 30)
    await dying.heartbeat.stop(end=False)  # as if killed: the beats stop
    homes = budget.keys.stream_homes()
    heartbeats = [home.dispatcher(dying.consumer) for home in homes]

    async def expired() -> bool:
        return not any([await redis_client.exists(key) for key in heartbeats])

    await until(expired, "the heartbeat expired in every home")
    handlers, got = collector()
    survivor = EventDispatcher(config, handlers=handlers, redis=redis_client)
    await survivor.drain()
    assert Counter(got) == Counter(ids)
    assert await pending_everywhere(budget, redis_client) == 0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_the_streams_of_a_bucket_deleted_under_the_dispatcher_are_read_again(
    make_budget: MakeBudget, redis_client: aioredis.Redis
) -> None:
    budget = make_budget()
    got: list[Event] = []
    budget.events.on("credits.deducted", got.append)
    await budget.record_spend("u1", "0.25")
    await until(lambda: len(got) == 1, "the first event")
    await asyncio.sleep(0.05)  # (the dispatcher waits on the streams again)
    bucket = budget.keys.of("u1")
    await redis_client.delete(bucket.ledger)
    await redis_client.delete(bucket.events)
    second = await budget.record_spend("u1", "0.5")
    await until(lambda: len(got) == 2, "the event after the streams were deleted")
    assert got[1].id == second.entry_id
    task = budget._dispatch_task
    assert task is not None and not task.done()


async def test_a_waiting_pass_wakes_for_an_event_in_any_bucket(
    make_budget: MakeBudget, redis_client: aioredis.Redis
) -> None:
    # One blocking read over every home on one Redis; rounds of reads on the
    # cluster: either way a pass waiting 30 s takes an event of the last
    # bucket as it comes.
    budget = make_budget()
    handlers, got = collector()
    dispatcher = EventDispatcher(
        config_of(budget), handlers=handlers, redis=redis_client, block_seconds=30
    )
    await dispatcher.run_once()  # (the groups, nothing yet)
    waiting = asyncio.create_task(dispatcher.run_once(block=True))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    last = next(u for u in USERS if bucket_of(u, len(budget.keys.buckets())) == 7)
    sid = await add_event(redis_client, budget.keys.of(last), user_id=last)
    assert await asyncio.wait_for(waiting, 10) == 1
    assert got == [budget.keys.id_for(sid, last)]


async def test_entries_of_two_buckets_with_one_stream_id_are_two_events(
    make_budget: MakeBudget, redis_client: aioredis.Redis
) -> None:
    # Each bucket's stream numbers its entries itself: the same stream id in
    # two buckets is two events, which a receiver deduplicating by id keeps.
    budget = make_budget()
    keys = budget.keys
    for user in ("u0", "u1"):
        await redis_client.xadd(
            keys.of(user).events,
            {"ty": "credits.cap_reached", "t": "1773576000000", "u": user},
            id="1773576000000-0",
        )
    handlers, got = collector()
    dispatcher = EventDispatcher(
        config_of(budget), handlers=handlers, redis=redis_client
    )
    assert await dispatcher.drain() == 2
    buckets = [bucket_of(user, budget.config.cluster_buckets) for user in ("u0", "u1")]
    assert sorted(got) == sorted(f"1773576000000-0~{b}" for b in buckets)


async def test_a_buckets_dead_letter_goes_to_the_roots_dead_letters(
    make_budget: MakeBudget,
    redis_client: aioredis.Redis,
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    budget = make_budget(use_clock=False)
    keys = budget.keys
    sid = await add_event(redis_client, keys.of("u5"), user_id="u5")

    def broken(event: Event) -> None:
        raise ValueError("handler bug")

    handlers = EventHandlers()
    handlers.on("*", broken)
    config = config_of(budget, events_max_attempts=2)
    dispatcher = EventDispatcher(config, handlers=handlers, redis=redis_client)
    assert await dispatcher.drain() == 1
    assert dispatcher.dead_lettered_total == 1
    [(_, letter)] = await redis_client.xrange(keys.events_dead)
    assert letter[b"id"].decode() == keys.id_for(sid, "u5")
    assert (letter[b"src"], letter[b"sid"].decode()) == (b"events", sid)
    assert letter[b"stream"].decode() == keys.of("u5").events
    assert await pending_everywhere(budget, redis_client) == 0
    _tail_env(monkeypatch, budget, backend)
    assert await asyncio.to_thread(main, ["events", "tail", "--dead"]) == 0
    out = capsys.readouterr().out
    assert f"from {keys.of('u5').events} {sid}: " in out
    assert "after 2 attempts: ValueError: handler bug" in out


# -- events tail ----------------------------------------------------------------------


def _tail_env(
    monkeypatch: pytest.MonkeyPatch, budget: BudgetManager, backend: str
) -> dict[str, str]:
    env = {
        "SPENDGATE_REDIS_URL": budget.config.redis_url or REDIS_URL,
        "SPENDGATE_KEY_PREFIX": budget.config.key_prefix,
        "SPENDGATE_CLUSTER_BUCKETS": str(budget.config.cluster_buckets),
        "SPENDGATE_REDIS_CLUSTER": str(backend == "sharded-cluster").lower(),
        # (sharded, the project and global caps must be none: blank is none)
        "SPENDGATE_DAILY_PROJECT_LIMIT": "",
        "SPENDGATE_DAILY_GLOBAL_LIMIT": "",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


async def test_tail_prints_the_events_of_every_bucket_by_time(
    make_budget: MakeBudget,
    redis_client: aioredis.Redis,
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    budget = make_budget(use_clock=False)
    ids = await spread_events(budget, redis_client)
    _tail_env(monkeypatch, budget, backend)
    code = await asyncio.to_thread(main, ["events", "tail", "--json", "-n", "200"])
    assert code == 0
    tailed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert Counter(e["id"] for e in tailed) == Counter(ids)
    times = [e["occurred_at"] for e in tailed]
    assert times == sorted(times)
    # -n: the newest ones of all the buckets
    assert await asyncio.to_thread(main, ["events", "tail", "--json", "-n", "5"]) == 0
    newest = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert newest == tailed[-5:]


async def test_tail_follow_prints_what_arrives_in_every_bucket(
    make_budget: MakeBudget,
    redis_client: aioredis.Redis,
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    budget = make_budget(use_clock=False)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("SPENDGATE_")
    } | _tail_env(monkeypatch, budget, backend)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    # A marker first: once it is printed (-n 1), the tail follows.
    marker = await add_event(redis_client, budget.keys.of("u3"), user_id="u3")
    process = subprocess.Popen(
        [sys.executable, "-m", "spendgate.cli", "events", "tail", "-f", "--json"]
        + ["-n", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen: list[dict[str, Any]] = []

    def read(count: int) -> None:
        assert process.stdout is not None
        while len(seen) < count:
            line = process.stdout.readline()
            if not line:
                return
            seen.append(json.loads(line))

    try:
        await asyncio.wait_for(asyncio.to_thread(read, 1), 60)
        assert seen[0]["id"] == budget.keys.id_for(marker, "u3")
        ids = await spread_events(budget, redis_client)
        await asyncio.wait_for(asyncio.to_thread(read, 1 + len(ids)), 60)
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert Counter(e["id"] for e in seen[1:]) == Counter(ids)
    assert {e["user_id"] for e in seen[1:]} == {*USERS, "ada"}


def test_the_users_cover_every_bucket() -> None:
    for buckets in (8, 16):
        assert {bucket_of(user, buckets) for user in USERS} == set(range(buckets))
