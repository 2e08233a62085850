"""The cluster section of ``bench.md`` (:mod:`bench.cluster`'s figures)."""

from __future__ import annotations

import shlex
from typing import Any

#: how the report names each deployment
NAMES = {
    "single": "single Redis",
    "masters1": "cluster, 1 master",
    "masters3": "cluster, 3 masters",
}
_OPS = (
    ("ping", "PING (floor)"),
    ("check_availability", "`check_availability`"),
    ("record_spend", "`record_spend`"),
)


def cluster_markdown(section: dict[str, Any] | None) -> list[str]:
    """The section's lines: latency, throughput, then what each master did."""
    lines = ["### Redis Cluster", ""]
    if section is None:
        return lines + ["Not measured in this run (`--no-cluster`).", ""]
    if "skipped" in section:
        return lines + [f"Not measured in this run: {section['skipped']}.", ""]
    wl = section["workload"]
    load = " ".join(section.get("loadavg_start") or ["?"])
    load_end = " ".join(section.get("loadavg_end") or ["?"])
    lines += [
        "The section starts its own servers on free ports (`redis-server` "
        f"{shlex.join(section['node_args'])}): a single Redis, a 1-master and a "
        "3-master cluster, a deployment on each (`redis_cluster=True` on the "
        "clusters; the 3-master one named by a master that does **not** own "
        f"spendgate's keys), {wl['users']} users pre-filled as above; load "
        f"average {load} at its start, {load_end} at its end.",
        "",
        *_latency(section["latency_us"]),
        *_throughput(section["throughput"]),
        *_masters(section["masters"]),
    ]
    return lines


def _latency(latency: dict[str, Any]) -> list[str]:
    n = int(latency["single"]["ping"]["n"])
    lines = [
        f"#### Latency through a cluster node (µs, {n:,} calls each, interleaved)",
        "",
        "| operation | single p50 | p90 | p99 | cluster p50 | p90 | p99 "
        "| cluster ÷ single p50 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for op, label in _OPS:
        s, c = latency["single"][op], latency["cluster"][op]
        ratio = latency["cluster_x_single_p50"][op]
        lines.append(
            f"| {label} | {s['p50']:.0f} | {s['p90']:.0f} | {s['p99']:.0f} | "
            f"{c['p50']:.0f} | {c['p90']:.0f} | {c['p99']:.0f} | {ratio:.2f}× |"
        )
    lines += [
        "",
        "Each side's PING goes through the client its calls go out on (on the "
        "cluster, the owning master's own connection: the client sends each "
        "call straight there, not through the node it was given).",
        "",
    ]
    return lines


def _throughput(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "#### Throughput on 1 and 3 masters (check + record pairs per second)",
        "",
        "| tasks | single Redis | 1 master | 3 masters | 3 ÷ 1 |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['concurrency']} | {r['single_pairs_s']:,.0f} | "
            f"{r['masters1_pairs_s']:,.0f} | {r['masters3_pairs_s']:,.0f} | "
            f"{r['masters3_x_masters1']:.2f}× |"
        )
    lines += [
        "",
        "The client, every server and the machine's other work share its "
        "cores, so these rates say what the client's path costs, not what the "
        "masters can take; what each master spent per decision, below, is "
        "CPU time and does not move with the load.",
        "",
    ]
    return lines


def _masters(masters: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = [
        "#### Per master: Redis CPU per decision, the split of keys and calls",
        "",
        "| deployment | master | keys | share | decisions | share | Redis CPU s "
        "| Redis CPU µs per decision | script µs per decision |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rows in masters.items():
        for i, m in enumerate(rows, 1):
            lines.append(
                f"| {NAMES.get(name, name)} | {i} (:{m['port']}) | {m['keys']:,} | "
                f"{m['keys_share']:.0%} | {m['decisions']:,} | "
                f"{m['decisions_share']:.0%} | {m['cpu_s']:.2f} | "
                f"{_us(m['cpu_us_per_decision'])} | "
                f"{_us(m['script_us_per_decision'])} |"
            )
    lines += ["", *_split_sentence(masters.get("masters3", [])), ""]
    return lines


def _us(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _split_sentence(rows: list[dict[str, Any]]) -> list[str]:
    """What the 3-master split shows, said from the figures."""
    busy = [m for m in rows if m["decisions"]]
    decisions = "A decision is one script call (check + record: two). Redis CPU is "
    decisions += (
        "`used_cpu_sys + used_cpu_user` over the throughput runs ÷ the "
        "`EVALSHA` calls in them (reading calls, running scripts, writing "
        "replies); script µs is `INFO commandstats`' `usec` per `EVALSHA`, "
        "wall time inside Redis, so on a loaded host (a master waiting for a "
        "core mid-script) it can exceed the CPU. "
        "A master that took no decision spent its CPU on its timers and the "
        "cluster bus. "
    )
    if len(busy) == 1 and rows:
        top = busy[0]
        per_core = 1e6 / top["cpu_us_per_decision"]
        return [
            decisions + f"On 3 masters, one master held {top['keys_share']:.0%} "
            f"of the keys and took {top['decisions_share']:.0%} of the decisions: "
            "every spendgate key carries the one hash tag `{sg}` today, so one "
            "master decides everything and more masters add no capacity (the "
            "3 ÷ 1 column can only be about 1, whatever the host's noise "
            "makes of it). A master at "
            f"{top['cpu_us_per_decision']:.0f} µs of CPU per decision decides "
            f"at most about {round(per_core, -3):,.0f} calls/s with a core of "
            "its own (batched as these runs batch them); "
            "the keyspace that spreads users across masters (so that each "
            "master adds that much) is not built yet."
        ]
    spread = ", ".join(f"{m['decisions_share']:.0%}" for m in rows)
    return [decisions + f"On 3 masters the decisions split {spread}."]
