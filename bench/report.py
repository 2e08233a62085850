"""The bench's human-readable outputs: a markdown table and a PNG chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.cluster_report import cluster_markdown

_LATENCY_ORDER = (
    "ping",
    "check_availability",
    "record_spend",
    "reserve+settle",
    "deduct",
    "deduct (plan)",
    "check_availability (model cap)",
    "team record_spend (model cap)",
)


def _label(side: str, name: str) -> str:
    if side == "spendgate":
        return "PING (floor)" if name == "ping" else f"spendgate `{name}`"
    return "peer PING" if name == "ping" else f"peer `{name}`"


def render_markdown(results: dict[str, Any]) -> str:
    """The results as markdown tables (the README's performance section)."""
    meta, machine = results["meta"], results["machine"]
    wl = meta["workload"]
    opts = meta["options"]
    lines: list[str] = []
    add = lines.append
    add(
        f"Measured {meta['started_at'][:19]}Z with `{meta['command'].strip()}` "
        f"(commit {machine.get('git_commit')}, {meta['duration_s']} s)."
    )
    add("")
    add(
        f"Machine: {machine.get('cpu_model', machine['machine'])}, "
        f"{machine['cpu_count']} CPUs, Python {machine['python']}, "
        f"redis-py {machine['redis_py']}, hiredis {machine.get('hiredis')}, "
        f"Redis {results['redis_info'].get('redis_version')} on {opts['redis_url']}; "
        f"load average {' '.join(machine.get('loadavg_start') or ['?'])} at the "
        f"start, {' '.join(machine.get('loadavg_end') or ['?'])} at the end."
    )
    proj = f"{wl['projects']} projects" if wl["projects"] else "no project"
    add(
        f"Workload: {wl['users']} users ({proj}), each pre-filled to "
        f"{wl['prefill']} of a daily cap of {wl['user_limit']}; checks ask "
        f"{wl['check_cost']}, records charge {wl['record_cost']}; "
        f"{opts['rounds']} rounds; in each, every side's latency subjects (its "
        "PING and its calls) interleaved call by call."
    )
    add("")
    add(f"### Sequential latency (µs, {opts['samples'] * opts['rounds']} calls each)")
    add("")
    add("| operation | p50 | p90 | p99 | p99.9 | p50 × PING p50 |")
    add("|---|---:|---:|---:|---:|---:|")
    for side in ("spendgate", "peer"):
        ops = results["latency_us"].get(side, {})
        for name in _LATENCY_ORDER:
            if name not in ops:
                continue
            s = ops[name]
            add(
                f"| {_label(side, name)} | {s['p50']:.0f} | {s['p90']:.0f} | "
                f"{s['p99']:.0f} | {s['p99.9']:.0f} | {s['x_ping_p50']:.2f}× |"
            )
    add("")
    add(
        "reserve+settle is two round trips (the lease is taken, then posted); "
        "deduct prices a 5-dimension price book on the client, then checks and "
        "charges in one; deduct (plan) is the same for users on a plan (a "
        "deployment of its own), priced with the plan's rate override and drawn "
        "on its free allowance in the same script. The (model cap) calls run in a "
        "deployment with per-model caps on and the model capped in every scope; "
        "the team record_spend charges the user's team pool, checking the "
        "membership and counting the member's and the model's counters in the "
        "same script."
    )
    add("")
    has_peer = any("peer_pairs_s" in r for r in results["throughput"])
    add("### Throughput (check_availability + record_spend pairs per second)")
    add("")
    if has_peer:
        add(
            "| tasks | PING ops/s | spendgate pairs/s | × PING | peer pairs/s "
            "| × PING | spendgate ÷ peer |"
        )
        add("|---:|---:|---:|---:|---:|---:|---:|")
    else:
        add("| tasks | PING ops/s | spendgate pairs/s | × PING |")
        add("|---:|---:|---:|---:|")
    for r in results["throughput"]:
        row = (
            f"| {r['concurrency']} | {r['spendgate_ping_ops_s']:,.0f} | "
            f"{r['spendgate_pairs_s']:,.0f} | {r['spendgate_x_ping']:.2f}× |"
        )
        if has_peer:
            row += (
                f" {r['peer_pairs_s']:,.0f} | {r['peer_x_ping']:.2f}× | "
                f"{r['spendgate_x_peer']:.2f}× |"
            )
        add(row)
    add("")
    add(
        "The floor is a plain PING, one round trip per call. spendgate sends "
        "calls made concurrently together (automatic pipelining, each call "
        "still its own atomic script), so under concurrency it can pass the "
        "plain-PING floor. For reference, PING through that same pipeline:"
    )
    add("")
    if all("spendgate_ping_pipelined_ops_s" in r for r in results["throughput"]):
        add("| tasks | pipelined PING ops/s | spendgate pairs/s ÷ pipelined PING |")
        add("|---:|---:|---:|")
        for r in results["throughput"]:
            add(
                f"| {r['concurrency']} | {r['spendgate_ping_pipelined_ops_s']:,.0f} | "
                f"{r['spendgate_x_ping_pipelined']:.2f}× |"
            )
        add("")
    ov = results["overshoot"]
    add(
        f"### Overshoot ({ov['tasks']} concurrent check-then-charge of "
        f"{ov['cost']} against a limit of {ov['limit']})"
    )
    add("")
    add("| guard | admitted | recorded | overshoot |")
    add("|---|---:|---:|---:|")
    names = {
        "spendgate_lease": "spendgate, lease (`reserve` + `settle`)",
        "spendgate_check_record": "spendgate, `check_availability` + `record_spend`",
        "peer_check_record": "peer, `check_availability` + `record_spend`",
    }
    for key, label in names.items():
        if key in ov:
            o = ov[key]
            add(f"| {label} | {o['admitted']} | {o['recorded']} | {o['overshoot']} |")
    add("")
    add(
        "A check is a read: callers racing past it all pass, whatever the guard. "
        "A lease takes the hold in the same atomic step as the check."
    )
    add("")
    add("### Import time and Redis memory")
    add("")
    add("| what | value |")
    add("|---|---:|")
    for side, module in (("spendgate", "spendgate"), ("peer", "coreason_budget")):
        imp = results["import_time"].get(side)
        if imp:
            heavy = ", ".join(imp["heavy_modules_imported"]) or "none"
            add(
                f"| `import {module}` (median of {imp['runs']}) | "
                f"{imp['median_s'] * 1000:.0f} ms (heavy modules: {heavy}) |"
            )
    m = results["memory"]
    add(
        f"| Redis memory per active user-day ({m['user_id_length']}-char user id: "
        f"{', '.join(m['per_user_keys'])}) | {m['per_user_day_bytes']:.0f} B |"
    )
    add(
        f"| per `record_spend`: idempotency record (kept "
        f"`idempotency_ttl_seconds`) | "
        f"{m['per_fact_idempotency_bytes']:.0f} B |"
    )
    add(
        f"| per lease: finished lease record (kept `idempotency_ttl_seconds`) | "
        f"{m['per_lease_record_bytes']:.0f} B |"
    )
    if "per_refund_record_bytes" in m:
        add(
            f"| per charge (spend, settle, deduct): refund record, user without "
            f"balance (kept `refund_window_seconds`, 30 days) | "
            f"{m['per_refund_record_bytes']:.0f} B |"
        )
        add(
            f"| per charge drawing on one grant: refund record | "
            f"{m['per_refund_record_with_grant_bytes']:.0f} B |"
        )
        add(f"| per grant held (3 keys of its user's) | {m['per_grant_bytes']:.0f} B |")
    add(
        f"| per fact (spend or settle): ledger stream entry (until the flusher "
        f"drains it) | "
        f"{m['per_ledger_entry_bytes']:.0f} B |"
    )
    add("")
    add(
        f"The day: {m['day']}; `MEMORY USAGE … SAMPLES 0` over the keys, averaged over "
        f"{m['users']} users."
    )
    add("")
    lines += cluster_markdown(results.get("cluster"))
    add("### Targets")
    add("")
    add("| target | wanted | measured | met |")
    add("|---|---|---|:---:|")
    for t in results["targets"]:
        met = "yes" if t["met"] else "**no**"
        add(f"| {t['name']} | {t['target']} | {t['shown']} | {met} |")
    add("")
    return "\n".join(lines)


def render_chart(results: dict[str, Any], path: Path) -> bool:
    """Latency distributions (left) and throughput by concurrency (right).

    :return: ``False`` when matplotlib is not installed (nothing written)
    """
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5))
    styles = {"spendgate": "-", "peer": "--"}
    for key, points in results["latency_quantiles_us"].items():
        side, name = key.split(":", 1)
        pct = [p for p, _ in points]
        # x: the latency; y: how rare a call that slow is (log scale of the tail)
        us = [v for _, v in points]
        tail = [max(100.0 - p, 0.001) for p in pct]
        left.plot(us, tail, styles[side], label=_label(side, name).replace("`", ""))
    left.set_xscale("log")
    left.set_yscale("log")
    left.invert_yaxis()
    left.set_yticks([50, 10, 1, 0.1, 0.01])
    left.set_yticklabels(["p50", "p90", "p99", "p99.9", "p99.99"])
    left.set_xlabel("latency, µs (log)")
    left.set_title("Sequential latency distribution")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)

    rows = results["throughput"]
    tasks = [r["concurrency"] for r in rows]
    right.plot(
        tasks,
        [r["spendgate_ping_ops_s"] for r in rows],
        "o-",
        label="PING ops/s (floor)",
    )
    right.plot(
        tasks,
        [r["spendgate_pairs_s"] for r in rows],
        "o-",
        label="spendgate check+record pairs/s",
    )
    if all("peer_pairs_s" in r for r in rows):
        right.plot(
            tasks,
            [r["peer_pairs_s"] for r in rows],
            "o--",
            label="peer check+record pairs/s",
        )
    right.set_xscale("log", base=2)
    right.set_xticks(tasks)
    right.set_xticklabels([str(t) for t in tasks])
    right.set_xlabel("concurrent tasks")
    right.set_ylabel("per second")
    right.set_title("Throughput")
    right.grid(True, alpha=0.3)
    right.legend(fontsize=8)
    fig.suptitle(
        f"spendgate hot path vs the Redis round-trip floor and the peer "
        f"({results['meta']['started_at'][:10]})"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def flusher_markdown(result: dict[str, Any]) -> str:
    """``bench.flusher_bench``'s tables (throughput, end-to-end lag)."""
    machine = result["machine"]
    t = result["throughput"]
    lines = [
        "# Flusher benchmark",
        "",
        f"`{result['command']}` on {machine.get('cpu_model', machine['machine'])}, "
        f"{machine['cpu_count']} CPUs; Redis {result['versions']['redis']}, "
        f"PostgreSQL {result['versions']['postgres']}, asyncpg "
        f"{result['versions']['asyncpg']}, Python {machine['python']}. "
        f"Redis, Postgres, the flusher and the producer share the machine "
        f"(load average {' '.join(machine.get('loadavg', ['?']))} at the start).",
        "",
        f"## Throughput: one flusher draining {t['entries']:,} entries "
        f"({t['rounds']} rounds)",
        "",
        "| batch size | entries/s (median) | entries/s (best) |",
        "|---:|---:|---:|",
    ]
    for b in t["by_batch_size"]:
        lines.append(
            f"| {b['batch_size']:,} | {b['entries_per_s_median']:,} | "
            f"{b['entries_per_s_best']:,} |"
        )
    lines += [
        "",
        f"Target: at least 20,000 entries/s. (Filling the stream through "
        f"`record_spend` ran at {t['fill_facts_per_s_median']:,} facts/s.)",
    ]
    lag_result = result.get("lag")
    if lag_result:
        lines += [
            "",
            f"## End-to-end lag at {lag_result['target_rate_facts_per_s']:,} facts/s "
            f"for {lag_result['duration_s']:g} s",
            "",
            f"A producer process recorded {lag_result['produced']:,} spends "
            f"({lag_result['achieved_rate_facts_per_s']:,} facts/s achieved); a "
            f"`spendgate flush` process ran at a {lag_result['flush_interval_s']:g} s "
            f"interval. Lag = `inserted_at - occurred_at` over "
            f"{lag_result['rows_measured']:,} rows after a "
            f"{lag_result['warmup_s']:g} s warm-up; "
            f"{lag_result['rows_in_postgres']:,} rows arrived in all.",
            "",
            "| p50 | p99 | max | max / flush interval |",
            "|---:|---:|---:|---:|",
            f"| {lag_result['lag_p50_s']:.3f} s | {lag_result['lag_p99_s']:.3f} s | "
            f"{lag_result['lag_max_s']:.3f} s | "
            f"{lag_result['lag_max_in_flush_intervals']} |",
            "",
            "Target: under two flush intervals.",
        ]
    return "\n".join(lines) + "\n"
