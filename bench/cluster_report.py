"""The cluster section of ``bench.md`` (:mod:`bench.cluster`'s figures)."""

from __future__ import annotations

import shlex
from typing import Any

from bench.cluster_stats import limiting

#: how the report names each deployment (``{buckets}``: the sharded one's)
NAMES = {
    "single": "single Redis",
    "masters1": "cluster, 1 master",
    "masters3": "cluster, 3 masters",
    "sharded3": "cluster, 3 masters, {buckets} buckets",
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
    buckets = section["sharded_buckets"]
    load = " ".join(section.get("loadavg_start") or ["?"])
    load_end = " ".join(section.get("loadavg_end") or ["?"])
    lines += [
        "The section starts its own servers on free ports (`redis-server` "
        f"{shlex.join(section['node_args'])}): a single Redis, a 1-master "
        "cluster and two 3-master clusters, a deployment on each "
        "(`redis_cluster=True` on the clusters, named by a master that does "
        "**not** own the `{sg}` slot), "
        f"{wl['users']} users pre-filled as above; load average {load} at its "
        f"start, {load_end} at its end. The first three keep every key under "
        f"`{{sg}}` (one bucket, the default); the last has `cluster_buckets="
        f"{buckets}`, each user's keys under `{{sg:<bucket>}}`, and so runs "
        "without the project and global caps (a sharded deployment refuses "
        "them; its scripts read and write the same counters).",
        "",
        *_latency(section["latency_us"]),
        *_throughput(section["throughput"], buckets),
        *_masters(section["masters"], buckets),
        *_ceilings(section, buckets),
    ]
    return lines


def _name(name: str, buckets: int) -> str:
    return NAMES.get(name, name).format(buckets=buckets)


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


def _throughput(rows: list[dict[str, Any]], buckets: int) -> list[str]:
    lines = [
        "#### Throughput on 1 and 3 masters (check + record pairs per second)",
        "",
        f"| tasks | single Redis | 1 master | 3 masters | 3 ÷ 1 | 3 masters, "
        f"{buckets} buckets | {buckets} buckets ÷ 1 master |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['concurrency']} | {r['single_pairs_s']:,.0f} | "
            f"{r['masters1_pairs_s']:,.0f} | {r['masters3_pairs_s']:,.0f} | "
            f"{r['masters3_x_masters1']:.2f}× | {r['sharded3_pairs_s']:,.0f} | "
            f"{r['sharded3_x_masters1']:.2f}× |"
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


def _masters(masters: dict[str, list[dict[str, Any]]], buckets: int) -> list[str]:
    lines = [
        "#### Per master: Redis CPU per decision, the split of keys and calls",
        "",
        "| deployment | master | buckets | users | keys | share | decisions "
        "| share | Redis CPU s | Redis CPU µs per decision "
        "| script µs per decision |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rows in masters.items():
        for i, m in enumerate(rows, 1):
            lines.append(
                f"| {_name(name, buckets)} | {i} (:{m['port']}) | "
                f"{m['buckets']} | {m['users']:,} | {m['keys']:,} | "
                f"{m['keys_share']:.0%} | {m['decisions']:,} | "
                f"{m['decisions_share']:.0%} | {m['cpu_s']:.2f} | "
                f"{_us(m['cpu_us_per_decision'])} | "
                f"{_us(m['script_us_per_decision'])} |"
            )
    lines += [
        "",
        "Buckets: the deployment's hash tags the master owns the slot of; "
        "users: the workload's users whose keys are in them.",
        "",
        *_split_sentence(masters.get("masters3", [])),
        "",
    ]
    return lines


def _ceilings(section: dict[str, Any], buckets: int) -> list[str]:
    ceilings, masters = section["ceiling_decisions_s"], section["masters"]
    by_tasks = section["ceiling_decisions_s_by_tasks"]
    tasks = [str(r["concurrency"]) for r in section["throughput"]]
    lines = [
        "#### Ceiling: decisions per second with a core per master",
        "",
        "| deployment | the master that fills first: its share of decisions "
        "| its Redis CPU µs per decision | ceiling, decisions/s | "
        + " | ".join(_tasks(t) for t in tasks)
        + " |",
        "|---|---:|---:|---:|" + "---:|" * len(tasks),
    ]
    for name, value in ceilings.items():
        top = limiting(masters[name])
        each = " | ".join(_rate(by_tasks[name][t]) for t in tasks)
        if value is None or top is None:
            lines.append(f"| {_name(name, buckets)} | – | – | – | {each} |")
            continue
        lines.append(
            f"| {_name(name, buckets)} | {top['decisions_share']:.0%} | "
            f"{top['cpu_us_per_decision']:.1f} | {_rate(value)} | {each} |"
        )
    lines += [
        "",
        "The ceiling is what the deployment could decide a second if each "
        "master had a core of its own, its calls split as they were here: "
        "the master that fills first sets it, at 1,000,000 ÷ its CPU µs per "
        "decision, which is its share of the whole. It is a bound from CPU "
        "time, not a measured rate (on this host the client and every master "
        "share its cores), over every throughput run and then at each "
        "concurrency alone: a master's CPU per decision falls as more calls "
        "are in flight to it (the client's pipeline sends them in fewer, "
        "larger writes), and the same tasks spread over three masters put "
        "a third as many in flight to each.",
        *_sharded_sentence(section, buckets, tasks),
        "",
    ]
    return lines


def _tasks(count: str) -> str:
    return "1 task" if count == "1" else f"{count} tasks"


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{round(value, -2):,.0f}"


def _us(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _split_sentence(rows: list[dict[str, Any]]) -> list[str]:
    """What the 3-master split with one bucket shows, said from the figures."""
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
    if len(busy) == 1 and rows and busy[0]["cpu_us_per_decision"]:
        top = busy[0]
        per_core = 1e6 / top["cpu_us_per_decision"]
        return [
            decisions + "On 3 masters with one bucket, one master held "
            f"{top['keys_share']:.0%} of the keys and took "
            f"{top['decisions_share']:.0%} of the decisions: every key of such "
            "a deployment carries the one hash tag `{sg}`, so one master "
            "decides everything and more masters add no capacity (the 3 ÷ 1 "
            "column can only be about 1, whatever the host's noise makes of "
            f"it). A master at {top['cpu_us_per_decision']:.0f} µs of CPU per "
            f"decision decides at most about {round(per_core, -3):,.0f} "
            "calls/s with a core of its own (batched as these runs batch "
            "them)."
        ]
    spread = ", ".join(f"{m['decisions_share']:.0%}" for m in rows)
    return [decisions + f"On 3 masters the decisions split {spread}."]


def _sharded_sentence(
    section: dict[str, Any], buckets: int, tasks: list[str]
) -> list[str]:
    """What the sharded deployment's split and ceilings show."""
    rows = section["masters"].get("sharded3", [])
    if not rows:
        return []
    owned = ", ".join(str(m["buckets"]) for m in rows)
    users = ", ".join(f"{m['users']:,}" for m in rows)
    calls = ", ".join(f"{m['decisions_share']:.0%}" for m in rows)
    keys = ", ".join(f"{m['keys_share']:.0%}" for m in rows)
    text = (
        f"Sharded over 3 masters, they own {owned} of the {buckets} buckets "
        f"({users} of the users), and took {calls} of the decisions and hold "
        f"{keys} of the keys: the split follows the buckets' slots (each "
        "bucket's hash tag lands where CRC16 puts it, so not an exact third)."
    )
    ceilings, by_tasks = (
        section["ceiling_decisions_s"],
        section["ceiling_decisions_s_by_tasks"],
    )
    ratios = [
        f"{by_tasks['sharded3'][t] / by_tasks['masters3'][t]:.2f}× at {_tasks(t)}"
        for t in tasks
        if by_tasks["sharded3"][t] and by_tasks["masters3"][t]
    ]
    sharded, single_slot = ceilings.get("sharded3"), ceilings.get("masters3")
    if sharded and single_slot:
        text += (
            f" Its ceiling is {sharded / single_slot:.2f}× that of the same 3 "
            f"masters with one bucket over every run ({', '.join(ratios)}); "
            f"the most it can be is 1 ÷ the largest share, "
            f"{1 / max(m['decisions_share'] for m in rows):.2f}×, reached "
            "where each master's calls cost what one master's do."
        )
    return [text]
