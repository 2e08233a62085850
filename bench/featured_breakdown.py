"""Where the featured calls' latency goes (issue 20: with a team and a
per-model cap, ``check_availability`` and ``record_spend`` within 1.6x PING),
beside PING and the least scripts that could do their work.

Interleaved call by call in one run, on ``make bench``'s featured
deployment (:mod:`bench.featured_workload`: ``model_caps`` on, the model
capped in every scope, every user a member of a funded team), against the
machine's Redis (a prefix of its own, deleted afterwards):

- PING, ``check_availability (model cap)`` and ``team record_spend (model
  cap)`` as the bench times them;
- ``EVALSHA check/team_record, raw``: the very command each sends (a team
  record's entry id, and so its idempotency key, fresh per call), straight
  through the same client: the call minus this is the manager's Python;
- ``EVALSHA, the least a check does``: :data:`LEAST_CHECK`, one ``MGET`` of
  what the contract cannot skip reading (the holds' due time, each scope's
  day and month counters, held amount and caps, and the model's caps,
  counters and held amount in each scope) and the comparisons;
- ``EVALSHA, the least a team record does``: :data:`LEAST_TEAM_RECORD`,
  the commands a team fact with a model cannot skip (the idempotency
  record claimed with one ``SET NX GET``, the membership, the six scope
  counters, the six model counters, the member's day and month, the pool,
  the refund record, the ledger entry), no helper, no option, no general
  case;
- ``EVALSHA, empty script``.

No implementation that keeps the contract in one script can take less than
the least scripts; the client's own work (ids, arguments, the answer) comes
on top.

``python -m bench.featured_breakdown [--rounds N] [--redis-url URL]``
(``PYTHONPATH=src`` from a checkout).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from bench import featured_workload
from bench.common import DEFAULT_REDIS_URL, delete_prefix, first_command
from bench.measure import interleaved_samples
from bench.runner import bench_config, callers, prefill
from spendgate import BudgetManager

#: check.lua's arguments: 1 now, 2 day, 3 month, 4 requested, 5 user,
#: 6 project, 7 plan, 8 model. One MGET of every value admission needs,
#: then each scope's rule (the configured default caps: the bench's, none
#: overridden) and the model's (its caps "<daily>|<monthly>").
LEAST_CHECK = b"""
local b, u, p, model = KEYS[1], ARGV[5], ARGV[6], ARGV[8]
local n = tonumber(ARGV[4])
local d, m = b .. 'd:' .. ARGV[2] .. ':', b .. 'm:' .. ARGV[3] .. ':'
local mp = #model .. ':' .. model .. ':'
local md, mm = b .. 'md:' .. ARGV[2] .. ':', b .. 'mm:' .. ARGV[3] .. ':'
local su, sp, mu, mpp, mg = 'u:' .. u, 'p:' .. p, 'u:' .. mp .. u, 'p:' .. mp .. p,
  'g:' .. mp
local v = redis.call('MGET', b .. 'due',
  d .. su, m .. su, b .. 'r:' .. su, b .. 'l:' .. su,
  d .. sp, m .. sp, b .. 'r:' .. sp, b .. 'l:' .. sp,
  d .. 'g', m .. 'g', b .. 'r:g', b .. 'l:g',
  b .. 'ml:' .. mu, md .. mu, mm .. mu, b .. 'mr:' .. mu,
  b .. 'ml:' .. mpp, md .. mpp, mm .. mpp, b .. 'mr:' .. mpp,
  b .. 'ml:' .. mg, md .. mg, mm .. mg, b .. 'mr:' .. mg)
if v[1] and tonumber(v[1]) <= tonumber(ARGV[1]) then return {9} end
local room = 1e15
for i = 2, 22, 4 do
  local held = tonumber(v[i + 2]) or 0
  local used_d, used_m = tonumber(v[i]) or 0, tonumber(v[i + 1]) or 0
  local cap_d, cap_m = 1e15, 1e15
  local caps = v[i + 3]
  if i > 13 then caps, used_d, used_m, held = v[i], tonumber(v[i + 1]) or 0,
    tonumber(v[i + 2]) or 0, tonumber(v[i + 3]) or 0 end
  if caps then
    local sep = string.find(caps, '|', 1, true)
    cap_d = tonumber(string.sub(caps, 1, sep - 1)) or 1e15
    cap_m = tonumber(string.sub(caps, sep + 1)) or 1e15
  end
  local r = math.min(cap_d - used_d, cap_m - used_m) - held
  if r < n then return {1} end
  if r < room then room = r end
end
return {0, room}
"""

#: team_record.lua's arguments: 1 now, 2 day, 3 day TTL, 4 month, 5 month
#: TTL, 6 amount, 7 fingerprint, 8 entry, 9 user, 10 project, 11 model,
#: 12 metadata, 13 the caller's key, 14 team. Its keys are its own (under
#: KEYS[1]); the members hash is filled by _least_setup.
LEAST_TEAM_RECORD = b"""
local b, a, u, p, model, t = KEYS[1], ARGV[6], ARGV[9], ARGV[10], ARGV[11], ARGV[14]
local ik = b .. 'i:a:' .. ARGV[8]
local payload = ARGV[8] .. '|' .. ARGV[1] .. '|' .. a
if redis.call('SET', ik, ARGV[7] .. '|' .. payload, 'NX', 'GET', 'PX', 86400000) then
  return {2}
end
if not redis.call('HGET', b .. 'tmem:' .. t, u) then return {8} end
local d, m = b .. 'd:' .. ARGV[2] .. ':', b .. 'm:' .. ARGV[4] .. ':'
local md, mm = b .. 'md:' .. ARGV[2] .. ':', b .. 'mm:' .. ARGV[4] .. ':'
local mp = #model .. ':' .. model .. ':'
local su, sp, mu, mpp, mg = 'u:' .. u, 'p:' .. p, 'u:' .. mp .. u, 'p:' .. mp .. p,
  'g:' .. mp
redis.call('INCRBY', d .. su, a)
redis.call('INCRBY', m .. su, a)
redis.call('INCRBY', d .. sp, a)
redis.call('INCRBY', m .. sp, a)
redis.call('INCRBY', d .. 'g', a)
redis.call('INCRBY', m .. 'g', a)
redis.call('INCRBY', md .. mu, a)
redis.call('INCRBY', mm .. mu, a)
redis.call('INCRBY', md .. mpp, a)
redis.call('INCRBY', mm .. mpp, a)
redis.call('INCRBY', md .. mg, a)
redis.call('INCRBY', mm .. mg, a)
redis.call('SET', b .. 'c:' .. ARGV[8], '0|' .. a .. '|' .. ARGV[2] .. '||' .. #u
           .. '|' .. #p .. '|' .. u .. p .. model, 'PX', 2592000000)
redis.call('HINCRBY', b .. 'tday:' .. ARGV[2] .. ':' .. t, u, a)
redis.call('HINCRBY', b .. 'tmon:' .. ARGV[4] .. ':' .. t, u, a)
redis.call('HINCRBY', b .. 'tpool:' .. t, 'b', '-' .. a)
redis.call('XADD', b .. 'ledger', '*', 'e', ARGV[8], 'k', 's', 't', ARGV[1], 'u', u,
           'a', a, 'p', p, 'm', model, 'md', ARGV[12], 'tm', t)
return {0, payload}
"""

Op = Callable[[int], Awaitable[Any]]


async def breakdown(redis_url: str, rounds: int) -> dict[str, float]:
    """Median latency in µs of each subject over ``rounds`` calls each."""
    prefix = f"sgfeatbd{uuid.uuid4().hex[:8]}"
    budget = BudgetManager(
        bench_config(redis_url, prefix, **featured_workload.config_changes())
    )
    await budget.open()
    client = budget.redis
    try:
        users, projects = callers(1000, 10)
        await prefill(budget, users, projects)
        await featured_workload.prepare(budget, users, projects)
        ops = featured_workload.featured_ops(budget, users, projects)
        check, record = ops.values()
        check_sent = await first_command(budget, check, "check")
        record_sent = await first_command(budget, record, "team_record")
        empty = await client.script_load(b"return 1")
        # (the least check reads the deployment's own keys; the least team
        # record writes keys of its own, its member made beside)
        base = f"{prefix}:least:"
        argv = _argv(record_sent)
        await client.hset(f"{base}tmem:{argv[14]}", str(argv[9]), "member|-1|-1")
        least_check = await client.script_load(LEAST_CHECK)
        least_record = await client.script_load(LEAST_TEAM_RECORD)
        subjects: dict[str, Op] = {
            "PING": lambda i: client.ping(),
            "check_availability (model cap)": check,
            "team record_spend (model cap)": record,
            "EVALSHA check, raw": _resend(client, check_sent),
            "EVALSHA team_record, raw": _fresh(client, record_sent),
            "EVALSHA, the least a check does": _resend(
                client, check_sent, least_check, budget.keys.base
            ),
            "EVALSHA, the least a team record does": _fresh(
                client, record_sent, least_record, base
            ),
            "EVALSHA, empty script": lambda i: client.execute_command(
                "EVALSHA", empty, 0
            ),
        }
        await interleaved_samples(subjects, 200)
        samples = await interleaved_samples(subjects, rounds, start=200)
        return {name: statistics.median(v) / 1000 for name, v in samples.items()}
    finally:
        await delete_prefix(client, prefix)
        await budget.aclose()


def _argv(command: tuple[Any, ...]) -> list[Any]:
    """An EVALSHA's arguments: ``_argv(c)[n]`` is the script's ARGV[n]."""
    return [None, *command[3 + int(command[2]) :]]


def _resend(
    client: Any, command: tuple[Any, ...], sha: str | None = None, key: str = ""
) -> Op:
    """``command`` (a check's EVALSHA: it writes nothing) sent again as is,
    or to another script with ``key`` its only key."""
    args = list(command)
    if sha is not None:
        args = ["EVALSHA", sha, 1, key, *_argv(command)[1:]]
    return lambda i: client.execute_command(*args)  # type: ignore[no-any-return]


def _fresh(
    client: Any, command: tuple[Any, ...], sha: str | None = None, key: str = ""
) -> Op:
    """``command`` (a team record's EVALSHA) with a fresh entry id, and so
    idempotency key, for call ``i``; or to another script with ``key`` its
    only key."""
    argv = _argv(command)
    entry, ikey, at = str(argv[8]), str(command[3]), 3 + int(command[2]) + 7
    own, dot, team = entry.partition(".")  # (a team charge's "<id>.<team>")
    head = list(command)
    if sha is not None:
        head = ["EVALSHA", sha, 1, key, *argv[1:]]
        at = 4 + 7

    def call(i: int) -> Awaitable[Any]:
        args = list(head)
        fresh = own[:-8] + f"{i:08x}"[-8:] + dot + team
        args[at] = fresh
        if sha is None:
            args[3] = ikey[: -len(entry)] + fresh
        return client.execute_command(*args)  # type: ignore[no-any-return]

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default=DEFAULT_REDIS_URL)
    parser.add_argument("--rounds", type=int, default=3000)
    args = parser.parse_args()
    from loguru import logger

    logger.disable("spendgate")  # (quiet, as the bench runs it)
    medians = asyncio.run(breakdown(args.redis_url, args.rounds))
    floor = medians["PING"]
    print(f"p50 of {args.rounds} calls each, call by call, on {args.redis_url}")
    for name, micros in medians.items():
        print(f"{name:40} {micros:7.1f} µs  {micros / floor:5.2f}× PING")


if __name__ == "__main__":
    main()
