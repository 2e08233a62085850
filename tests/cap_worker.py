"""One app process of tests/test_cluster_processes.py: its own BudgetManager
on a Redis Cluster, driven by the test over stdin, one JSON line per command,
each answered with one JSON line on stdout.

Started as ``python cap_worker.py SETTINGS NOW``: ``SETTINGS`` is the JSON of
the ``BudgetConfig`` (``redis_cluster=True``, a node's URL, the key prefix,
the default caps, the spool folder), ``NOW`` the instant its clock stays at
(ISO 8601, so every process counts the same day). It answers
``{"ready": pid}`` once the manager is open, then:

- ``{"op": "reserve", "at": T, "amount": A, "calls": [[user, project], ...]}``:
  wait until wall-clock ``T`` (the other processes wait for the same
  instant), then every reserve at once (``asyncio.gather``); answers the
  admitted lease ids, the refusals counted by ``"scope/window"``, anything
  else raised (``errors``), and when the burst began and ended.
- ``{"op": "end", "at": T, "settle": [lease id, ...]}``: at ``T``, settle
  those of its open leases at their amount and release all others, at once;
  answers how many of each and the errors.
- ``{"op": "exit"}``: close the manager and exit.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from datetime import datetime
from decimal import Decimal
from typing import Any

from spendgate import BudgetConfig, BudgetExceededError, BudgetManager, Lease


async def _at(instant: float) -> None:
    await asyncio.sleep(max(0.0, instant - time.time()))


async def _reserve(
    budget: BudgetManager, leases: dict[str, Lease], command: dict[str, Any]
) -> dict[str, Any]:
    amount = Decimal(command["amount"])
    await _at(command["at"])
    began = time.time()
    results = await asyncio.gather(
        *(budget.reserve(user, amount, project) for user, project in command["calls"]),
        return_exceptions=True,
    )
    ended = time.time()
    admitted, refused, errors = [], {}, []
    for result in results:
        if isinstance(result, Lease):
            leases[result.id] = result
            admitted.append(result.id)
        elif isinstance(result, BudgetExceededError):
            why = f"{result.scope}/{result.window}"
            refused[why] = refused.get(why, 0) + 1
        else:
            errors.append(repr(result))
    return {
        "admitted": admitted,
        "refused": refused,
        "errors": errors,
        "began": began,
        "ended": ended,
    }


async def _end(
    budget: BudgetManager, leases: dict[str, Lease], command: dict[str, Any]
) -> dict[str, Any]:
    to_settle = set(command["settle"])
    await _at(command["at"])
    calls = [
        budget.settle(lease, lease.amount)
        if lease_id in to_settle
        else budget.release(lease)
        for lease_id, lease in leases.items()
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    # (release answers True for a hold that was counting: all of them were)
    errors += [f"release answered {r}" for r in results if r is False]
    settled = len(to_settle & leases.keys())
    leases.clear()
    return {"settled": settled, "released": len(calls) - settled, "errors": errors}


async def main(settings: dict[str, Any], now: datetime) -> None:
    budget = BudgetManager(BudgetConfig(**settings), clock=lambda: now)
    await budget.open()
    leases: dict[str, Lease] = {}
    print(json.dumps({"ready": os.getpid()}), flush=True)
    try:
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:  # the test went away
                return
            command = json.loads(line)
            if command["op"] == "exit":
                return
            run = _reserve if command["op"] == "reserve" else _end
            print(json.dumps(await run(budget, leases, command)), flush=True)
    finally:
        await budget.aclose()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1]), datetime.fromisoformat(sys.argv[2])))
