"""The ``spendgate`` command line.

Each subcommand is added by one ``_add_<name>`` function; heavy imports
(asyncpg, fastapi, ...) happen inside the command, never at start-up.
Exit codes: 0 success, 1 failure, 2 usage error, 3 refused (over budget),
4 store unavailable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_UNAVAILABLE = 4


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "demo", help="a narrated walkthrough on the embedded store (no Redis needed)"
    )
    parser.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from spendgate.cli.demo import main as demo_main

    demo_main()
    return EXIT_OK


#: the scopes limits can be set on
_OP_SCOPES = ("user", "project", "global")


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "serve",
        help="run the HTTP budget service (needs spendgate[server])",
        description=(
            "Run the HTTP budget service (FastAPI on uvicorn), configured from the "
            "SPENDGATE_* environment. Callers authenticate with a bearer key from "
            "SPENDGATE_API_KEYS (comma-separated); without keys it refuses to start "
            "unless --insecure-no-auth is given."
        ),
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=8000, help="port (default: %(default)s)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="worker processes (default: %(default)s)"
    )
    parser.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="accept every caller when no API key is configured (logged as a warning)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="uvicorn's log level (default: %(default)s)",
    )
    parser.set_defaults(handler=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    import os

    from spendgate.config import load_config
    from spendgate.errors import ConfigurationError

    try:
        config = load_config()
    except ConfigurationError as exc:
        return _op_fail(f"invalid settings: {exc}", EXIT_USAGE)
    try:
        import uvicorn

        from spendgate.server import INSECURE_ENV
    except ImportError:
        return _op_fail(
            "the server needs its extra: pip install 'spendgate[server]'", EXIT_FAILURE
        )
    if not 1 <= args.port <= 65535 or args.workers < 1:
        return _op_fail("--port must be 1-65535 and --workers at least 1", EXIT_USAGE)
    if not config.api_key_list() and not args.insecure_no_auth:
        return _op_fail(
            "no API keys configured: set SPENDGATE_API_KEYS (comma-separated), or pass "
            "--insecure-no-auth to accept every caller",
            EXIT_USAGE,
        )
    if config.redis_url is None and args.workers > 1:
        return _op_fail(
            "SPENDGATE_REDIS_URL is not set: the embedded store lives in one process, "
            "so --workers above 1 would give each worker its own budgets",
            EXIT_USAGE,
        )
    # Workers are separate processes: the flag reaches them through the environment.
    if args.insecure_no_auth:
        os.environ[INSECURE_ENV] = "1"
    else:
        os.environ.pop(INSECURE_ENV, None)
    try:
        uvicorn.run(
            "spendgate.server:create_app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=args.log_level,
            lifespan="on",
        )
    except SystemExit as exc:
        # uvicorn exits 3 when the app fails to start; 3 means "refused" here.
        return EXIT_OK if exc.code in (0, None) else EXIT_FAILURE
    return EXIT_OK


def _add_usage(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "usage",
        help="show a user's spend, holds, caps and balance",
        description="Show spent, held, cap, remaining and reset time per scope and "
        "window for one user (and a project), from the Redis in SPENDGATE_REDIS_URL.",
    )
    parser.add_argument("user", help="the user id")
    parser.add_argument("--project", help="also show this project")
    parser.add_argument(
        "--json", action="store_true", help="print JSON instead of a table"
    )
    parser.set_defaults(handler=_run_usage)


def _run_usage(args: argparse.Namespace) -> int:
    async def work(budget: Any) -> int:
        scopes = await budget.get_usage(args.user, args.project)
        if args.json:
            _op_json(
                {
                    "user_id": args.user,
                    "project_id": args.project,
                    "unit": budget.config.unit,
                    "scopes": {name: _op_scope(s) for name, s in scopes.items()},
                }
            )
            return EXIT_OK
        rows = []
        for name, s in scopes.items():
            for window in ("daily", "monthly"):
                w = getattr(s, window)
                rows.append(
                    [
                        name,
                        "-" if s.scope_id is None else s.scope_id,
                        window,
                        str(w.spent),
                        str(w.held),
                        _op_text(w.limit, "no cap"),
                        _op_text(w.remaining, "-"),
                        w.resets_at.strftime("%Y-%m-%d %H:%M UTC"),
                    ]
                )
        _op_table(
            ["scope", "id", "window", "spent", "held", "limit", "remaining", "resets"],
            rows,
        )
        balance = scopes["user"].balance
        if balance is not None:
            who = _op_cell(args.user)
            print(f"balance of user {who}: {balance} {budget.config.unit}")
        return EXIT_OK

    return _op_run(work)


def _add_limits(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "limits",
        help="show, set or clear per-entity daily and monthly caps",
        description="Per-entity cap overrides, effective on the next call "
        "(no restart).",
    )
    actions = parser.add_subparsers(dest="limits_action", metavar="ACTION")
    actions.required = True
    for name, text in (
        ("get", "show the caps in force for one entity"),
        ("set", "override an entity's caps"),
        ("clear", "drop an entity's overrides (back to the configured defaults)"),
    ):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument("scope", choices=_OP_SCOPES, help="user, project or global")
        action.add_argument(
            "id", nargs="?", help="the user or project id (not for global)"
        )
        if name == "set":
            for window in ("daily", "monthly"):
                action.add_argument(
                    f"--{window}",
                    metavar="AMOUNT",
                    help=f"the {window} cap: an amount, or 'none' for no cap; "
                    "left out: unchanged",
                )
        action.add_argument(
            "--json", action="store_true", help="print JSON instead of a table"
        )
        action.set_defaults(handler=_run_limits)


def _run_limits(args: argparse.Namespace) -> int:
    if args.scope != "global" and not args.id:
        return _op_fail(f"an id is needed for scope {args.scope}", EXIT_USAGE)
    if args.limits_action == "set" and args.daily is None and args.monthly is None:
        return _op_fail("give --daily and/or --monthly", EXIT_USAGE)

    async def work(budget: Any) -> int:
        from spendgate.manager import UNSET

        if args.limits_action == "clear":
            limits = await budget.clear_limits(args.scope, args.id)
        else:
            changes = {}
            if args.limits_action == "set":
                for window in ("daily", "monthly"):
                    value = getattr(args, window)
                    if value is not None:
                        none = value.strip().lower() == "none"
                        changes[window] = None if none else value
            limits = await budget.set_limits(
                args.scope,
                args.id,
                daily=changes.get("daily", UNSET),
                monthly=changes.get("monthly", UNSET),
            )
        body = {
            "scope": limits.scope,
            "scope_id": limits.scope_id,
            "daily": _op_text(limits.daily, None),
            "monthly": _op_text(limits.monthly, None),
            "overridden": sorted(limits.overridden),
        }
        if args.json:
            _op_json(body)
            return EXIT_OK
        rows = [
            [
                limits.scope,
                "-" if limits.scope_id is None else limits.scope_id,
                window,
                _op_text(getattr(limits, window), "no cap"),
                "override" if window in limits.overridden else "default",
            ]
            for window in ("daily", "monthly")
        ]
        _op_table(["scope", "id", "window", "limit", "source"], rows)
        return EXIT_OK

    return _op_run(work)


def _add_credits(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "credits",
        help="add prepaid credits to a user's balance",
        description="Prepaid credits (balances are enforced when "
        "SPENDGATE_ENFORCE_BALANCE is true).",
    )
    actions = parser.add_subparsers(dest="credits_action", metavar="ACTION")
    actions.required = True
    add = actions.add_parser(
        "add",
        help="add credits to a user's balance (rounded down to the micro-unit)",
        description="Add credits to a user's balance (rounded down to the micro-unit).",
    )
    add.add_argument("user", help="the user id")
    add.add_argument("amount", help="the amount, e.g. 25 or 0.50")
    add.add_argument(
        "--idempotency-key",
        help="run it again with the same key and nothing is added twice",
    )
    add.add_argument("--json", action="store_true", help="print JSON instead of text")
    add.set_defaults(handler=_run_credits_add)


def _run_credits_add(args: argparse.Namespace) -> int:
    async def work(budget: Any) -> int:
        rec = await budget.add_credits(
            args.user, args.amount, idempotency_key=args.idempotency_key
        )
        body = {
            "entry_id": rec.entry_id,
            "user_id": rec.user_id,
            "amount": str(rec.amount),
            "balance": _op_text(rec.balance, None),
            "replayed": rec.replayed,
            "spooled": rec.spooled,
        }
        if args.json:
            _op_json(body)
            return EXIT_OK
        unit, who = budget.config.unit, _op_cell(rec.user_id)
        if rec.spooled:
            print(f"Redis unreachable: {rec.amount} {unit} for {who} spooled")
        elif rec.replayed:
            print(f"already added (same key): balance {rec.balance} {unit}")
        else:
            print(f"added {rec.amount} {unit}: balance of {who} {rec.balance}")
        print(f"entry {rec.entry_id}")
        return EXIT_OK

    return _op_run(work)


def _op_run(work: Callable[[Any], Awaitable[int]]) -> int:
    """Run an operator command on a BudgetManager over the configured Redis,
    mapping errors to the exit codes."""
    import asyncio

    from spendgate.config import load_config
    from spendgate.errors import (
        BudgetExceededError,
        BudgetUnavailableError,
        ConfigurationError,
        IdempotencyConflictError,
        InvalidArgumentError,
        InvalidIdTypeError,
        SpendgateError,
    )
    from spendgate.manager import BudgetManager

    try:
        config = load_config()
    except ConfigurationError as exc:
        return _op_fail(f"invalid settings: {exc}", EXIT_USAGE)
    if config.redis_url is None:
        # The embedded store is empty and private to this process: an operator
        # command on it would report or change nothing real.
        return _op_fail(
            "SPENDGATE_REDIS_URL is not set: point it at the Redis your services use",
            EXIT_USAGE,
        )

    async def go() -> int:
        async with BudgetManager(config) as budget:
            return await work(budget)

    try:
        return asyncio.run(go())
    except BudgetUnavailableError as exc:
        return _op_fail(str(exc), EXIT_UNAVAILABLE)
    except BudgetExceededError as exc:
        return _op_fail(str(exc), EXIT_REFUSED)
    except (InvalidArgumentError, InvalidIdTypeError, IdempotencyConflictError) as exc:
        return _op_fail(str(exc), EXIT_USAGE)
    except (SpendgateError, ConfigurationError) as exc:
        return _op_fail(str(exc), EXIT_FAILURE)


def _op_fail(message: str, code: int) -> int:
    print(f"spendgate: {message}", file=sys.stderr)
    return code


def _op_text(value: object, missing: str | None) -> str | None:
    return missing if value is None else str(value)


def _op_json(body: object) -> None:
    import json

    print(json.dumps(body, indent=2, ensure_ascii=True))


def _op_scope(usage: Any) -> dict[str, Any]:
    def window(w: Any) -> dict[str, Any]:
        return {
            "spent": str(w.spent),
            "held": str(w.held),
            "limit": _op_text(w.limit, None),
            "remaining": _op_text(w.remaining, None),
            "resets_at": w.resets_at.isoformat(),
        }

    return {
        "scope_id": usage.scope_id,
        "held": str(usage.held),
        "balance": _op_text(usage.balance, None),
        "daily": window(usage.daily),
        "monthly": window(usage.monthly),
    }


def _op_table(header: list[str], rows: list[list[Any]]) -> None:
    # One table printer for every command (ids escaped, numbers right-aligned).
    from spendgate.cli.ledger import print_table

    print_table(header, rows)


def _op_cell(value: object) -> str:
    from spendgate.cli.ledger import printable

    return printable(value)


def _add_migrate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from spendgate.cli.ledger import add_migrate

    add_migrate(sub)


def _add_flush(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from spendgate.cli.ledger import add_flush

    add_flush(sub)


def _add_report(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from spendgate.cli.ledger import add_report

    add_report(sub)


def _add_reconcile(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from spendgate.cli.ledger import add_reconcile

    add_reconcile(sub)


#: where ``spendgate bench`` measures when neither --redis-url nor
#: SPENDGATE_REDIS_URL says otherwise (a database of its own)
_BENCH_DEFAULT_URL = "redis://127.0.0.1:6379/12"


def _add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "bench",
        help="time the hot path against a bare PING on your Redis (short; "
        "the full comparison with the peer is `make bench`)",
    )
    parser.add_argument(
        "--redis-url",
        default=None,
        help=f"default: SPENDGATE_REDIS_URL, else {_BENCH_DEFAULT_URL}",
    )
    parser.add_argument(
        "--samples", type=int, default=2000, help="calls per operation (default 2000)"
    )
    parser.set_defaults(handler=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    import asyncio
    import os

    url = args.redis_url or os.environ.get("SPENDGATE_REDIS_URL") or _BENCH_DEFAULT_URL
    return asyncio.run(_bench(url, max(4, args.samples)))


async def _bench(url: str, samples: int) -> int:
    # Sequential calls, interleaved call by call so noise hits every operation
    # alike, under a key prefix of their own that is deleted afterwards.
    import time
    import uuid
    from decimal import Decimal

    from redis.exceptions import RedisError

    from spendgate import BudgetConfig, BudgetManager
    from spendgate.config import redact_url

    prefix = f"sgclibench{uuid.uuid4().hex[:8]}"
    config = BudgetConfig(
        redis_url=url,
        key_prefix=prefix,
        daily_user_limit=Decimal(1000),
        daily_project_limit=Decimal(10**9),
        daily_global_limit=Decimal(10**9),
    )
    budget = BudgetManager(config)
    client = budget.redis
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        print(f"spendgate bench: Redis at {redact_url(url)} did not answer: {exc}")
        await budget.aclose()
        return EXIT_UNAVAILABLE

    async def ping(i: int) -> object:
        return await client.execute_command("PING")  # type: ignore[no-untyped-call]

    async def check(i: int) -> object:
        return await budget.check_availability(f"u{i % 100}", f"p{i % 10}", 0.01)

    async def record(i: int) -> object:
        return await budget.record_spend(f"u{i % 100}", 0.002, f"p{i % 10}")

    async def reserve_settle(i: int) -> object:
        lease = await budget.reserve(f"u{i % 100}", 0.01, f"p{i % 10}")
        return await budget.settle(lease, 0.002)

    ops: dict[str, Callable[[int], Awaitable[object]]] = {
        "PING (floor)": ping,
        "check_availability": check,
        "record_spend": record,
        "reserve+settle": reserve_settle,
    }
    timings: dict[str, list[int]] = {name: [] for name in ops}
    try:
        await budget.open()
        for op in ops.values():  # warm-up: connections, scripts
            for i in range(50):
                await op(i)
        names = list(ops)
        for i in range(samples):
            # Call by call, the order rotating each turn, as make bench does.
            for k in range(len(names)):
                slot = (i + k) % len(names)
                t0 = time.perf_counter_ns()
                await ops[names[slot]](i * len(names) + slot)
                timings[names[slot]].append(time.perf_counter_ns() - t0)
    finally:
        keys = [k async for k in client.scan_iter(match=budget.keys.pattern())]
        for start in range(0, len(keys), 500):
            await client.delete(*keys[start : start + 500])
        await budget.aclose()

    def pct(values: list[int], p: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))] / 1000

    floor = pct(timings["PING (floor)"], 0.5)
    print(f"spendgate bench: {samples} sequential calls each on {redact_url(url)}")
    print(f"{'operation':<20} {'p50 µs':>8} {'p99 µs':>8} {'p50 × PING':>11}")
    for name, values in timings.items():
        p50 = pct(values, 0.5)
        print(f"{name:<20} {p50:8.0f} {pct(values, 0.99):8.0f} {p50 / floor:10.2f}×")
    print("reserve+settle is two round trips. Full comparison: make bench")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    from spendgate import __version__

    parser = argparse.ArgumentParser(
        prog="spendgate",
        description="spendgate: a Redis-backed, low-latency budget guard for LLM apps",
    )
    parser.add_argument(
        "--version", action="version", version=f"spendgate {__version__}"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_demo(sub)
    _add_migrate(sub)
    _add_flush(sub)
    _add_report(sub)
    _add_reconcile(sub)
    _add_serve(sub)
    _add_usage(sub)
    _add_limits(sub)
    _add_credits(sub)
    _add_bench(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code
