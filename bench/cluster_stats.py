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

From these, a deployment's *ceiling* (:func:`ceiling`): the decisions a
second it could take with a core per master, before the master that runs
out first is full. One master doing all the work makes it that master's
``1e6 / c``; masters sharing the work evenly make it about their sum.

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


def summed(parts: Sequence[list[dict[str, float]]]) -> list[dict[str, float]]:
    """Per master, the sum of what it did in each of ``parts`` (totals of
    :func:`add_delta`, one per run kind)."""
    out: list[dict[str, float]] = [{} for _ in parts[0]]
    for part in parts:
        for sums, t in zip(out, part, strict=True):
            for key, value in t.items():
                sums[key] = sums.get(key, 0) + value
    return out


def decisions(totals: list[dict[str, float]]) -> list[dict[str, Any]]:
    """Per master: its decisions and its share of them, and the CPU and
    script time each cost it (``None`` on a master that took none)."""
    all_calls = sum(t.get("script_calls", 0) for t in totals)
    rows = []
    for t in totals:
        calls = int(t.get("script_calls", 0))
        cpu_s = t.get("cpu_s", 0.0)
        rows.append(
            {
                "decisions": calls,
                "decisions_share": calls / all_calls if all_calls else 0.0,
                "cpu_s": round(cpu_s, 3),
                "cpu_us_per_decision": cpu_s * 1e6 / calls if calls else None,
                "script_us_per_decision": (
                    t.get("script_usec", 0) / calls if calls else None
                ),
            }
        )
    return rows


def per_master(
    servers: Sequence[Server], totals: list[dict[str, float]]
) -> list[dict[str, Any]]:
    """One row per master: its keys now and its share of them, then
    :func:`decisions`' figures."""
    keys = []
    for server in servers:
        with server.client() as client:
            keys.append(int(client.dbsize()))
    all_keys = sum(keys)
    return [
        {
            "port": server.port,
            "keys": count,
            "keys_share": count / all_keys if all_keys else 0.0,
            **row,
        }
        for server, count, row in zip(servers, keys, decisions(totals), strict=True)
    ]


def limiting(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The master that would fill first with a core per master, its calls
    split as they were: the one whose ``1e6 / CPU µs per decision``, the
    decisions a second it can take, is the smallest multiple of its share
    (``None``: no master measured any CPU)."""
    busy = [m for m in rows if m["decisions"] and m["cpu_us_per_decision"]]
    if not busy:
        return None
    return min(
        busy, key=lambda m: 1e6 / m["cpu_us_per_decision"] / m["decisions_share"]
    )


def ceiling(rows: Sequence[dict[str, Any]]) -> float | None:
    """The decisions a second a deployment could take with a core per
    master, its calls split as they were: what :func:`limiting`'s master
    can take, divided by its share (``None``: no master measured any CPU)."""
    top = limiting(rows)
    if top is None:
        return None
    return 1e6 / top["cpu_us_per_decision"] / top["decisions_share"]
