"""What each master did during the cluster bench's throughput runs.

A *decision* is one script call (``EVALSHA``): ``check_availability`` is
one, ``record_spend`` another, so a check + record pair is two. Per master,
from ``INFO`` read before and after every throughput run (the deltas
summed, so the latency runs between them do not count):

- the Redis CPU it spent (``used_cpu_sys + used_cpu_user``, the whole
  process: reading the calls, running the scripts, writing the replies)
  per decision it took. This is what scales: on a host with cores to spare
  each master is one core, and a master at ``c`` µs per decision decides at
  most ``1e6 / c`` calls a second;
- the script time alone per decision (``INFO commandstats``, the ``usec``
  of ``EVALSHA``, which includes the commands the script runs);
- the split of calls (``EVALSHA`` calls) and, at the end, of keys
  (``DBSIZE``) across the masters.

CPU time, unlike wall time, does not move with the host's load, so these
figures hold on a busy 2-core machine where the throughput figures do not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

#: the commands that are a script call (a decision); the commands a script
#: runs are counted apart by commandstats and are already in its ``usec``
SCRIPT_COMMANDS = ("evalsha", "evalsha_ro", "eval", "eval_ro", "fcall", "fcall_ro")


class Server(Protocol):
    """A private redis-server (tests/redis_server.py's ``RedisServer``)."""

    port: int

    def client(self) -> Any: ...


def snapshot(server: Server) -> dict[str, float]:
    """The master's CPU seconds, script calls and script µs so far."""
    with server.client() as client:
        cpu = client.info("cpu")
        commands = client.info("commandstats")
    calls = usec = 0
    for name in SCRIPT_COMMANDS:
        stat = commands.get(f"cmdstat_{name}")
        if stat:
            calls += int(stat["calls"])
            usec += int(stat["usec"])
    return {
        "cpu_s": float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]),
        "script_calls": calls,
        "script_usec": usec,
    }


def snapshots(servers: Sequence[Server]) -> list[dict[str, float]]:
    return [snapshot(server) for server in servers]


def add_delta(
    total: list[dict[str, float]],
    before: list[dict[str, float]],
    after: list[dict[str, float]],
) -> None:
    """Add what each master did between ``before`` and ``after`` to ``total``."""
    for sums, b, a in zip(total, before, after, strict=True):
        for key in a:
            sums[key] = sums.get(key, 0) + a[key] - b[key]


def per_master(
    servers: Sequence[Server], totals: list[dict[str, float]]
) -> list[dict[str, Any]]:
    """One row per master: its keys now and its share of them, its share of
    the decisions, and the CPU and script time each decision cost it
    (``None`` on a master that took none)."""
    keys = []
    for server in servers:
        with server.client() as client:
            keys.append(int(client.dbsize()))
    all_keys, all_calls = sum(keys), sum(t["script_calls"] for t in totals)
    rows = []
    for server, count, t in zip(servers, keys, totals, strict=True):
        calls = int(t["script_calls"])
        rows.append(
            {
                "port": server.port,
                "keys": count,
                "keys_share": count / all_keys if all_keys else 0.0,
                "decisions": calls,
                "decisions_share": calls / all_calls if all_calls else 0.0,
                "cpu_s": round(t["cpu_s"], 3),
                "cpu_us_per_decision": t["cpu_s"] * 1e6 / calls if calls else None,
                "script_us_per_decision": t["script_usec"] / calls if calls else None,
            }
        )
    return rows
