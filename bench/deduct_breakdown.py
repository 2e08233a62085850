"""Where a ``deduct``'s latency goes, beside PING, check and record.

Interleaved call by call in one run, on ``make bench``'s workload (the
5-dimension book of :mod:`bench.deduct_workload`, every user funded), against
the machine's Redis (db 12, a prefix of its own, deleted afterwards):

- PING, ``check_availability``, ``record_spend`` and ``deduct`` as the bench
  times them;
- ``EVALSHA deduct, raw``: the very command a ``deduct`` sends (the real
  script, the same arguments: the user, project and entry id of each call
  changed), sent straight through the same client: ``deduct`` minus this is
  the manager's Python (pricing, metadata, arguments, the answer);
- ``EVALSHA deduct, raw, no metadata``: the same with an empty metadata
  argument: what the breakdown's JSON costs on the wire and in ``XADD``;
- ``EVALSHA trivial, deduct's args``: a script that only answers, with the
  same arguments: ``raw`` minus this is ``deduct.lua``'s own work;
- ``EVALSHA, the least a deduct does``: :data:`LEAST_DEDUCT` with the same
  arguments, on keys of its own: only the commands the contract cannot do
  without (the active version, the admission's one ``MGET``, six counters,
  the draw on the user's one grant, the refund record, the ledger entry) and
  no helper, no option, no general case. No implementation of ``deduct``
  in one script can take less; with the client's pricing on top, it is the
  floor under the ``deduct`` line;
- ``EVALSHA, empty script``: no arguments, no work: a script call beside PING.

``--server-time`` adds what Redis itself spends per call: ``check``,
``record`` and ``deduct`` each run ``--rounds`` times in a row, and the
difference in ``INFO commandstats`` (``EVALSHA``'s calls and µs, and each
command the script called) before and after each block. Every client's
calls count there: on a Redis of its own (``redis-server --port 6391``,
``--redis-url redis://127.0.0.1:6391/0``) the figures are the calls' alone.

``python -m bench.deduct_breakdown [--rounds N] [--redis-url URL]
[--server-time]`` (``PYTHONPATH=src`` from a checkout).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from bench import deduct_workload
from bench.common import DEFAULT_REDIS_URL, delete_prefix, first_command
from bench.measure import interleaved_samples
from bench.runner import bench_config, callers, hot_path_ops, prefill
from spendgate import BudgetManager

#: deduct.lua's answer for a charge, with nothing read or written
TRIVIAL_DEDUCT = (
    b"return {0, ARGV[8] .. '|' .. ARGV[1] .. '|999999000000|' .. ARGV[6] .. '|1'}"
)

#: the least a deduct's script can do for a user holding one grant (every
#: bench user does), as deduct.lua's arguments give it: read the active
#: version; read the user's balance, each scope's day and month counters,
#: held amount and caps in one MGET; check every cap and the balance; count
#: the amount in the six counters; draw it from the grant; write the refund
#: record and the ledger entry. Its keys are its own (under KEYS[1]), filled
#: by _least_setup; the caps are the bench's defaults, none overridden.
LEAST_DEDUCT = b"""
local b, a, u, p = KEYS[1], ARGV[6], ARGV[9], ARGV[10]
local n = tonumber(a)
if redis.call('GET', b .. 'active') ~= ARGV[14] then return {6} end
local d, m = b .. 'd:' .. ARGV[2] .. ':', b .. 'm:' .. ARGV[4] .. ':'
local su, sp = 'u:' .. u, 'p:' .. p
local v = redis.call('MGET', b .. 'bal:' .. u,
  d .. su, m .. su, b .. 'h:' .. su, b .. 'l:' .. su,
  d .. sp, m .. sp, b .. 'h:' .. sp, b .. 'l:' .. sp,
  d .. 'g', m .. 'g', b .. 'h:g', b .. 'l:g')
for i = 2, 10, 4 do
  local held = tonumber(v[i + 2]) or 0
  if v[i + 3] or (tonumber(v[i]) or 0) + held + n > 1e15
     or (tonumber(v[i + 1]) or 0) + held + n > 1e15 then return {1} end
end
local bal, granted, nx = string.match(v[1], '^(%d+)|(%d+)|(%d+)$')
bal, granted = tonumber(bal) - n, tonumber(granted) - n
if bal < 0 then return {1} end
for _, key in ipairs({d .. su, m .. su, d .. sp, m .. sp, d .. 'g', m .. 'g'}) do
  redis.call('INCRBY', key, a)
end
local grant = redis.call('ZRANGE', b .. 'go:' .. u, 0, 0)[1]
redis.call('HINCRBY', b .. 'g:' .. u, grant, -n)
local after = string.format('%.0f', bal)
redis.call('SET', b .. 'bal:' .. u,
           after .. '|' .. string.format('%.0f', granted) .. '|' .. nx)
redis.call('SET', b .. 'c:' .. ARGV[8], '0|' .. a .. '|' .. ARGV[2] .. '|'
           .. grant .. '=' .. a .. '|' .. #u .. '|' .. #p .. '|' .. u .. p
           .. ARGV[11], 'PX', 2592000000)
redis.call('XADD', b .. 'ledger', '*', 'e', ARGV[8], 'k', 's', 't', ARGV[1], 'u', u,
           'a', a, 'p', p, 'm', ARGV[11], 'md', ARGV[12], 'pv', ARGV[14])
return {0, ARGV[8] .. '|' .. ARGV[1] .. '|' .. after .. '|' .. a .. '|'
           .. ARGV[14] .. '|'}
"""

Op = Callable[[int], Awaitable[Any]]


async def breakdown(
    redis_url: str, rounds: int, server_time: bool = False
) -> dict[str, float]:
    """Median latency in µs of each subject over ``rounds`` calls each; with
    ``server_time``, also each call's Redis time in µs per call
    (``server <op>``: its EVALSHA; ``server <op> <command>``: each command
    its script called, per call of the script)."""
    prefix = f"sgdeductbd{uuid.uuid4().hex[:8]}"
    budget = BudgetManager(bench_config(redis_url, prefix))
    await budget.open()
    client = budget.redis
    try:
        users, projects = callers(1000, 10)
        await prefill(budget, users, projects)
        await deduct_workload.prepare(budget, users)
        ops = hot_path_ops(budget, users, projects)
        deduct = deduct_workload.deduct_op(budget, users, projects)
        command = await first_command(budget, deduct, "deduct")
        trivial = await client.script_load(TRIVIAL_DEDUCT)
        empty = await client.script_load(b"return 1")
        least = await client.script_load(LEAST_DEDUCT)
        least_base = await _least_setup(client, prefix, users, command)
        subjects: dict[str, Op] = {
            "PING": lambda i: client.ping(),
            "check_availability": ops["check_availability"],
            "record_spend": ops["record_spend"],
            "deduct": deduct,
            "EVALSHA deduct, raw": _raw(client, command, users, projects),
            "EVALSHA deduct, raw, no metadata": _raw(
                client, command, users, projects, metadata=""
            ),
            "EVALSHA trivial, deduct's args": _raw(
                client, command, users, projects, sha=trivial
            ),
            "EVALSHA, the least a deduct does": _raw(
                client, command, users, projects, sha=least, key=least_base
            ),
            "EVALSHA, empty script": lambda i: client.execute_command(
                "EVALSHA", empty, 0
            ),
        }
        await interleaved_samples(subjects, 200)
        samples = await interleaved_samples(subjects, rounds, start=200)
        out = {name: statistics.median(v) / 1000 for name, v in samples.items()}
        if server_time:
            for name in ("check_availability", "record_spend", "deduct"):
                op = subjects[name]
                before = await client.info("commandstats")
                for i in range(rounds):
                    await op((rounds + 200) * len(subjects) + i)
                after = await client.info("commandstats")
                out.update(_server_time(name, before, after))
        return out
    finally:
        await delete_prefix(client, prefix)
        await budget.aclose()


def _server_time(
    name: str, before: dict[str, Any], after: dict[str, Any]
) -> dict[str, float]:
    """µs per EVALSHA, and per EVALSHA of each command, between two
    ``INFO commandstats``."""
    empty = {"calls": 0, "usec": 0}
    calls = (
        after["cmdstat_evalsha"]["calls"]
        - before.get("cmdstat_evalsha", empty)["calls"]
    )
    out = {}
    for stat, now in after.items():
        was = before.get(stat, empty)
        usec = now["usec"] - was["usec"]
        if stat.startswith("cmdstat_") and usec and stat != "cmdstat_info":
            command = stat.removeprefix("cmdstat_")
            key = f"server {name}" + ("" if command == "evalsha" else f" {command}")
            out[key] = usec / max(calls, 1)
    return out


def _raw(
    client: Any,
    command: tuple[Any, ...],
    users: list[str],
    projects: list[str | None],
    *,
    metadata: str | None = None,
    sha: str | None = None,
    key: str | None = None,
) -> Op:
    """``command`` (a deduct's EVALSHA) sent as is for call ``i``, for user
    and project ``i`` and a fresh entry id; its metadata, script and key
    changed when given."""
    # EVALSHA sha 1 key ARGV[1..16]: ARGV[n] is command[3 + n]
    head = list(command)
    if sha is not None:
        head[1] = sha
    if metadata is not None:
        head[3 + 12] = metadata
    entry = str(head[3 + 8])
    charge_key = str(head[3])
    no_key = charge_key.endswith(entry)
    nu, np_ = len(users), len(projects)

    def call(i: int) -> Awaitable[Any]:
        args = list(head)
        fresh = entry[:-8] + f"{i:08x}"[-8:]
        args[3 + 8] = fresh
        args[3 + 9] = users[i % nu]
        args[3 + 10] = projects[i % np_] or ""
        if key is not None:
            args[3] = key
        elif no_key:
            args[3] = charge_key[: -len(entry)] + fresh
        return client.execute_command(*args)  # type: ignore[no-any-return]

    return call


async def _least_setup(
    client: Any, prefix: str, users: list[str], command: tuple[Any, ...]
) -> str:
    """:data:`LEAST_DEDUCT`'s keys, under the bench's prefix: the active
    version the command names and, for every user, a balance of one
    never-expiring grant (its key's three parts, as deduct.lua's), the grant
    in its order and its remainder. Returns its base (its KEYS[1])."""
    base = f"{prefix}:least:"
    funds = 10**15
    member = "9007199254740991:g0:0:purchase"
    pipe = client.pipeline(transaction=False)
    pipe.set(base + "active", command[3 + 14])
    for user in users:
        pipe.set(f"{base}bal:{user}", f"{funds}|{funds}|9007199254740991")
        pipe.zadd(f"{base}go:{user}", {member: 0})
        pipe.hset(f"{base}g:{user}", member, funds)
    await pipe.execute()
    return base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--rounds", type=int, default=3000)
    parser.add_argument("--server-time", action="store_true")
    args = parser.parse_args()
    from loguru import logger

    logger.disable("spendgate")  # (quiet, as the bench runs it)
    medians = asyncio.run(breakdown(args.redis_url, args.rounds, args.server_time))
    floor = medians["PING"]
    print(f"p50 of {args.rounds} calls each, call by call, on {args.redis_url}")
    for name, micros in medians.items():
        if name.startswith("server "):
            print(f"{name:34} {micros:7.2f} µs of Redis time per call")
        else:
            print(f"{name:34} {micros:7.1f} µs  {micros / floor:5.2f}× PING")


if __name__ == "__main__":
    main()
