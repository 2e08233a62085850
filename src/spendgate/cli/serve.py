"""``spendgate serve``: the HTTP budget service on uvicorn.

Everything that would make the service useless or unsafe is checked before
uvicorn starts (settings, the extra, API keys, workers on the embedded store).
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from spendgate.cli import logs
from spendgate.cli.printer import fail
from spendgate.errors import ExitCode

if TYPE_CHECKING:
    from fastapi import FastAPI

    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def add_serve(sub: SubParsers) -> None:
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
        "--embedded",
        action="store_true",
        help=(
            "run on the embedded in-process store when SPENDGATE_REDIS_URL is not "
            "set (one worker; budgets are lost when it stops): for trying it out"
        ),
    )
    parser.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="accept every caller when no API key is configured (logged as a warning)",
    )
    parser.add_argument(
        "--log-level",
        # The same option as spendgate --log-level: given here, it wins.
        default=argparse.SUPPRESS,
        choices=logs.LEVELS,
        help=f"uvicorn's and spendgate's log level (default: {logs.SERVE_DEFAULT})",
    )
    parser.set_defaults(handler=run_serve, log_level_default=logs.SERVE_DEFAULT)


def run_serve(args: argparse.Namespace) -> int:
    from spendgate.config import load_config
    from spendgate.errors import ConfigurationError

    try:
        config = load_config()
    except ConfigurationError as exc:
        return fail(f"invalid settings: {exc}", ExitCode.USAGE)
    try:
        import uvicorn

        from spendgate.server import INSECURE_ENV
    except ImportError:
        return fail(
            "the server needs its extra: pip install 'spendgate[server]'",
            ExitCode.FAILURE,
        )
    if not 1 <= args.port <= 65535 or args.workers < 1:
        return fail("--port must be 1-65535 and --workers at least 1", ExitCode.USAGE)
    if not config.api_key_list() and not args.insecure_no_auth:
        return fail(
            "no API keys configured: set SPENDGATE_API_KEYS (comma-separated), or pass "
            "--insecure-no-auth to accept every caller",
            ExitCode.USAGE,
        )
    if config.redis_url is not None:
        from spendgate.cli.runner import UsageError, check_redis_url

        try:
            check_redis_url(config.redis_url)
        except UsageError as exc:
            return fail(str(exc), ExitCode.USAGE)
    if config.redis_url is None and (args.workers > 1 or not args.embedded):
        # A service that quietly keeps its budgets in its own memory (per
        # worker, gone on restart) is never what an operator wants.
        return fail(
            "SPENDGATE_REDIS_URL is not set: point it at your Redis, or pass "
            "--embedded to run one worker on the in-process store (budgets are "
            "lost when it stops; --workers above 1 would each keep their own)",
            ExitCode.USAGE,
        )
    # Workers are separate processes: the flags reach them through the environment.
    if args.insecure_no_auth:
        os.environ[INSECURE_ENV] = "1"
    else:
        os.environ.pop(INSECURE_ENV, None)
    os.environ[logs.LOG_LEVEL_ENV] = args.log_level
    try:
        uvicorn.run(
            "spendgate.cli.serve:app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=args.log_level,
            lifespan="on",
        )
    except SystemExit as exc:
        # uvicorn exits 3 when the app fails to start; 3 means "refused" here.
        return ExitCode.OK if exc.code in (0, None) else ExitCode.FAILURE
    return ExitCode.OK


def app_from_env() -> FastAPI:
    """The app ``spendgate serve`` runs (a uvicorn factory, called in each
    worker process): spendgate's log lines on at the level asked, then the
    server's own factory."""
    from spendgate.server import create_app_from_env

    logs.configure(os.environ.get(logs.LOG_LEVEL_ENV, logs.SERVE_DEFAULT))
    return create_app_from_env()
