"""A run's results: the figures assembled with the machine facts, the
targets checked against them, and the files written (JSON, markdown, chart)."""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from bench.common import CHECK_COST, PREFILL, RECORD_COST, USER_LIMIT, machine_info
from bench.measure import summarize_ns

if TYPE_CHECKING:
    from bench.runner import Options


def assemble(
    options: Options,
    started: float,
    samples: dict[tuple[str, str], list[int]],
    tput: dict[tuple[str, str, int], list[tuple[int, float]]],
    overshoot: dict[str, Any],
    memory: dict[str, Any],
    imports: dict[str, Any],
    info: dict[str, Any],
) -> dict[str, Any]:
    from spendgate.config import redact_url

    latency: dict[str, dict[str, Any]] = {}
    for (side, name), values in samples.items():
        latency.setdefault(side, {})[name] = summarize_ns(values)
    floor = latency["spendgate"]["ping"]["p50"]
    for side in latency.values():
        for summary in side.values():
            summary["x_ping_p50"] = summary["p50"] / floor
    peer_floor = latency.get("peer", {}).get("ping", {}).get("p50")
    if peer_floor:
        for summary in latency["peer"].values():
            summary["x_own_ping_p50"] = summary["p50"] / peer_floor

    rows = []
    for c in options.concurrency:
        row: dict[str, Any] = {"concurrency": c}
        for side in ("spendgate", "peer"):
            for name, key in (
                ("ping", "ping_ops_s"),
                ("check+record", "pairs_s"),
                ("ping_pipelined", "ping_pipelined_ops_s"),
            ):
                runs = tput.get((side, name, c))
                if runs:
                    done = sum(d for d, _ in runs)
                    elapsed = sum(e for _, e in runs)
                    row[f"{side}_{key}"] = done / elapsed
                    row[f"{side}_{key}_rounds"] = [d / e for d, e in runs]
        ping = row["spendgate_ping_ops_s"]
        row["spendgate_x_ping"] = row["spendgate_pairs_s"] / ping
        if "spendgate_ping_pipelined_ops_s" in row:
            row["spendgate_x_ping_pipelined"] = (
                row["spendgate_pairs_s"] / row["spendgate_ping_pipelined_ops_s"]
            )
        if "peer_pairs_s" in row:
            row["peer_x_ping"] = row["peer_pairs_s"] / ping
            row["spendgate_x_peer"] = row["spendgate_pairs_s"] / row["peer_pairs_s"]
        rows.append(row)

    opts = {k: v for k, v in asdict(options).items() if k not in ("log",)}
    opts["out_dir"] = str(options.out_dir)
    opts["redis_url"] = redact_url(options.redis_url)
    results: dict[str, Any] = {
        "meta": {
            "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
            "duration_s": round(time.time() - started, 1),
            "command": options.command,
            "options": opts,
            "workload": {
                "users": options.users,
                "projects": options.projects,
                "check_cost": CHECK_COST,
                "record_cost": RECORD_COST,
                "user_limit": USER_LIMIT,
                "prefill": PREFILL,
            },
        },
        "machine": machine_info(),
        "latency_us": latency,
        "throughput": rows,
        "overshoot": overshoot,
        "import_time": imports,
        "memory": memory,
        "redis_info": info,
    }
    results["targets"] = targets(results, options)
    return results


def targets(results: dict[str, Any], options: Options) -> list[dict[str, Any]]:
    lat = results["latency_us"]["spendgate"]
    out: list[dict[str, Any]] = []

    def add(
        name: str, target: str, value: float | None, met: bool | None, shown: str
    ) -> None:
        out.append(
            {"name": name, "target": target, "value": value, "met": met, "shown": shown}
        )

    for op, limit in (
        ("check_availability", 1.5),
        ("record_spend", 1.5),
        ("reserve+settle", 3.0),
        ("deduct", 1.6),
        ("deduct (plan)", 1.6),
        ("check_availability (model cap)", 1.6),
        ("team record_spend (model cap)", 1.6),
    ):
        if op not in lat:
            continue
        x = lat[op]["x_ping_p50"]
        add(f"{op} p50", f"<= {limit}x PING p50", x, x <= limit, f"{x:.2f}x")
    row64 = next((r for r in results["throughput"] if r["concurrency"] == 64), None)
    if row64 is not None:
        x = row64["spendgate_x_ping"]
        add("64-task check+record", ">= 0.35x PING ops/s", x, x >= 0.35, f"{x:.2f}x")
        if "spendgate_x_peer" in row64:
            x = row64["spendgate_x_peer"]
            add(
                "64-task check+record vs peer", ">= 3x the peer", x, x >= 3, f"{x:.2f}x"
            )
    lease = results["overshoot"]["spendgate_lease"]
    over = Decimal(lease["overshoot"])
    add("overshoot with leases", "0", float(over), over == 0, f"{lease['overshoot']}")
    imp = results["import_time"]["spendgate"]
    ok = imp["median_s"] <= 0.3 and not imp["heavy_modules_imported"]
    heavy = (
        ", ".join(imp["heavy_modules_imported"]) or "none of litellm/fastapi/asyncpg"
    )
    add(
        "import spendgate",
        "<= 0.3 s, no heavy imports",
        imp["median_s"],
        ok,
        f"{imp['median_s']:.3f} s, {heavy}",
    )
    mem = results["memory"]["per_user_day_bytes"]
    add("Redis memory per active user-day", "<= 400 B", mem, mem <= 400, f"{mem:.0f} B")
    return out


def write(
    options: Options, results: dict[str, Any], samples: dict[tuple[str, str], list[int]]
) -> None:
    import json

    from bench.report import render_chart, render_markdown

    out = options.out_dir
    out.mkdir(parents=True, exist_ok=True)
    results["latency_quantiles_us"] = {
        f"{side}:{name}": quantiles(values) for (side, name), values in samples.items()
    }
    (out / "bench.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out / "bench.md").write_text(render_markdown(results))
    options.log(f"bench: wrote {out / 'bench.json'} and {out / 'bench.md'}")
    if options.chart:
        path = out / "latency.png"
        if render_chart(results, path):
            options.log(f"bench: wrote {path}")
        else:
            options.log(
                "bench: matplotlib is not installed; no chart (pip install '.[bench]')"
            )


def quantiles(values: list[int]) -> list[list[float]]:
    """(percentile, µs) points of the distribution, dense in the tail, for the chart."""
    ordered = sorted(values)
    n = len(ordered)
    points = (
        [p / 2 for p in range(0, 200)]
        + [99 + p / 100 for p in range(0, 100)]
        + [99.9 + p / 1000 for p in range(0, 100)]
    )
    out = []
    for pct in points:
        idx = min(n - 1, int(pct / 100 * n))
        out.append([round(pct, 3), ordered[idx] / 1000])
    out.append([100.0, ordered[-1] / 1000])
    return out
