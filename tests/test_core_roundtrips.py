"""One round trip per hot-path call, and a script-cache flush survived.

Counts what the manager sends in two ways: every command through the
client's ``execute_command`` (both backends), and, on real Redis, what the
server itself saw from the manager's connection, with MONITOR filtered by
that connection's address. After warm-up, ``check_availability``,
``record_spend``, ``reserve``, ``settle`` and ``release`` must each be exactly
one EVALSHA.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from conftest import REDIS_URL, MakeBudget, real_redis_available, service_missing
from spendgate import BudgetConfig, BudgetManager
from spendgate.core.scripts import _lua_string


def _record_commands(client: aioredis.Redis) -> list[tuple[Any, ...]]:
    """Every command sent through ``client`` from now on, with its arguments."""
    sent: list[tuple[Any, ...]] = []
    original = client.execute_command

    async def recording(*args: Any, **options: Any) -> Any:
        sent.append(args)
        return await original(*args, **options)

    client.execute_command = recording  # type: ignore[method-assign]
    return sent


async def _hot_path_calls(
    budget: BudgetManager,
) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
    lease_a = await budget.reserve("warm", "1")
    lease_b = await budget.reserve("warm", "1")
    return [
        ("check_availability", lambda: budget.check_availability("alice", "p", "1")),
        ("record_spend", lambda: budget.record_spend("alice", "1", "p", "m")),
        ("reserve", lambda: budget.reserve("alice", "1", project_id="p")),
        ("settle", lambda: budget.settle(lease_a, "0.5")),
        ("release", lambda: budget.release(lease_b)),
    ]


async def test_each_hot_path_call_is_one_evalsha(make_budget: MakeBudget) -> None:
    budget = make_budget(daily_user_limit="100")
    await budget.open()
    await budget.check_availability("warm")
    calls = await _hot_path_calls(budget)
    sent = _record_commands(budget.redis)
    for name, call in calls:
        sent.clear()
        await call()
        assert [str(command[0]).upper() for command in sent] == ["EVALSHA"], name


async def test_calls_carry_no_configuration(make_budget: MakeBudget) -> None:
    # The configuration is part of the loaded scripts: a call sends only what
    # changes per call (check: now, day, month, amount, user, project, and
    # the plan argument: "" here, balances not being enforced).
    budget = make_budget(
        daily_user_limit="123.456789", monthly_global_limit="98765", ledger_maxlen=4321
    )
    await budget.open()
    configured = {budget.keys.base, "123456789", "98765000000", "4321"}
    calls = await _hot_path_calls(budget)
    sent = _record_commands(budget.redis)
    for name, call in calls:
        sent.clear()
        await call()
        ((command, _sha, nkeys, *rest),) = sent
        assert command == "EVALSHA", name
        arguments = {str(arg) for arg in rest[nkeys:]}
        assert not arguments & configured, (name, rest)
        if name == "check_availability":
            assert len(rest) == nkeys + 7, rest
            assert rest[-1] == "", rest


@pytest.mark.parametrize(
    "value", ["plain", "", "it's", 'a"b', "back\\slash", "new\nline", "]]--", "\x00é€"]
)
async def test_configuration_constants_reach_lua_exactly(
    make_budget: MakeBudget, value: str
) -> None:
    # However a configured value is spelt, the script's constant is that
    # value, byte for byte: it cannot end the literal or change the code.
    budget = make_budget()
    literal = _lua_string(value)
    assert await budget.redis.eval(b"return " + literal, 0) == value.encode()


async def test_script_cache_flush_is_survived(make_budget: MakeBudget) -> None:
    budget = make_budget(daily_user_limit="10")
    await budget.open()
    await budget.record_spend("alice", "1")
    await budget.redis.script_flush()
    await budget.record_spend("alice", "2")
    await budget.redis.script_flush()
    assert await budget.check_availability("alice", None, "7") is True
    usage = await budget.get_usage("alice")
    assert usage["user"].daily.spent == 3


@contextlib.asynccontextmanager
async def _observed_budget(
    **config: Any,
) -> AsyncIterator[tuple[BudgetManager, aioredis.Redis, tuple[str, str]]]:
    """A manager on real Redis over a connection of its own, warmed up; an
    observer connection; and what MONITOR knows its commands by: the
    manager's address, and its key prefix (for what its scripts run). Deletes
    the manager's keys afterwards."""
    reason = real_redis_available()
    if reason:
        service_missing("Redis", reason)
    name = f"sg-rt-{uuid.uuid4().hex[:8]}"
    prefix = f"t{uuid.uuid4().hex[:12]}"
    client = aioredis.Redis.from_url(REDIS_URL, client_name=name)
    observer = aioredis.Redis.from_url(REDIS_URL)
    budget = BudgetManager(BudgetConfig(key_prefix=prefix, **config), redis=client)
    try:
        await budget.open()
        await budget.check_availability("warm")
        clients = await observer.client_list()
        ours = [c["addr"] for c in clients if c.get("name") == name]
        assert len(ours) == 1, clients
        yield budget, observer, (ours[0], prefix)
    finally:
        keys = [k async for k in observer.scan_iter(match=f"{prefix}:*")]
        if keys:
            await observer.delete(*keys)
        await budget.aclose()
        await client.aclose()
        await observer.aclose()


async def test_server_sees_one_command_per_call() -> None:
    async with _observed_budget(daily_user_limit=None) as (budget, observer, addr):
        for label, call in await _hot_path_calls(budget):
            seen = await _monitor_while(observer, addr, call)
            assert [cmd.split()[0].upper() for cmd in seen] == ["EVALSHA"], (
                label,
                seen,
            )


async def test_admission_with_no_hold_due_runs_only_its_read() -> None:
    # Expired holds are purged before admission reads, but only once one is
    # due: until then a check or reserve runs one MGET inside its script,
    # with holds pending or not (no EXISTS, no range scan of the holds).
    async with _observed_budget(daily_user_limit="100") as (budget, observer, addr):
        inside: list[str] = []  # (the warm-up check learnt the due time)
        await _monitor_while(
            observer, addr, lambda: budget.check_availability("a"), inside
        )
        assert [cmd.split()[0].upper() for cmd in inside] == ["MGET"]

        await budget.reserve("b", "1", ttl_seconds=60)  # a hold is now pending
        for call in (
            lambda: budget.check_availability("a"),
            lambda: budget.reserve("a", "1", ttl_seconds=120),
        ):
            inside.clear()
            await _monitor_while(observer, addr, call, inside)
            assert [cmd.split()[0].upper() for cmd in inside][0] == "MGET"
            assert not any(
                cmd.split()[0].upper() in ("EXISTS", "ZRANGEBYSCORE", "ZRANGE")
                for cmd in inside
            ), inside


async def _monitor_while(
    observer: aioredis.Redis,
    addr: tuple[str, str],
    call: Callable[[], Awaitable[Any]],
    inside: list[str] | None = None,
) -> list[str]:
    """The commands the manager at ``addr`` (its address and key prefix)
    sent while ``call`` ran; the commands its scripts ran go to ``inside``
    when given."""
    address, prefix = addr
    host, port = address.rsplit(":", 1)
    seen: list[str] = []
    async with observer.monitor() as monitor:
        await call()
        # A marker from the observer's own connection ends the window.
        marker = f"sg-marker-{uuid.uuid4().hex}"
        marker_client = aioredis.Redis.from_url(REDIS_URL)
        await marker_client.echo(marker)
        await marker_client.aclose()
        while True:
            event = await asyncio.wait_for(monitor.next_command(), timeout=5)
            if marker in event["command"]:
                break
            if event["client_address"] == host and str(event["client_port"]) == port:
                seen.append(event["command"])
            elif (
                inside is not None
                and event.get("client_type") == "lua"
                and prefix in event["command"]
            ):
                # (MONITOR names no caller for a script's commands: any other
                # client of this Redis running scripts shows up as "lua" too;
                # ours name keys of our own prefix)
                inside.append(event["command"])
    return seen


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
