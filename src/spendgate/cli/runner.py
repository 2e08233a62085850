"""Running a ``spendgate`` command: settings, the event loop, exit codes.

Every command's work is a coroutine run by :func:`run`, which turns what
it raises into a message on stderr and an exit code: spendgate's own
errors through :func:`spendgate.errors.outcome_of` (the one table the
server and the metrics read too), the drivers' errors (redis-py, asyncpg,
sockets) as "unavailable" when the server is gone or busy and as a failure
otherwise; a stdout whose reader has gone (``| head``) as a failure, never
"unavailable" (what the command did is done). Nothing here imports asyncpg
or redis at load time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from spendgate.cli.printer import fail
from spendgate.errors import ConfigurationError, ExitCode, SpendgateError, outcome_of

if TYPE_CHECKING:
    from spendgate.config import BudgetConfig
    from spendgate.manager import BudgetManager

#: what a command's work is: a coroutine that returns the exit code
Body = Callable[[], Coroutine[Any, Any, int]]


class UsageError(Exception):
    """A command line or settings problem found by a command: exit code 2."""


def settings(
    args: argparse.Namespace | None = None,
    *,
    needs_redis: bool = False,
    needs_postgres: bool = False,
) -> BudgetConfig:
    """The configuration from the ``SPENDGATE_*`` environment (``--dsn``
    overriding the DSN).

    :param needs_redis: refuse the embedded store: it is private to this
        process, so a command on it would report or change nothing real
    :param needs_postgres: refuse a missing DSN
    :raise UsageError: when the settings are invalid or lack what is needed
    """
    from spendgate.config import load_config
    from spendgate.ledger.pg import database_url

    dsn = getattr(args, "dsn", None)
    if dsn is None and needs_postgres:
        # bursar's (and many platforms') DATABASE_URL, below ours
        dsn = database_url()
    overrides = {"postgres_dsn": dsn} if dsn else {}
    try:
        config = load_config(**overrides)
    except ConfigurationError as exc:
        raise UsageError(f"invalid settings: {exc}") from None
    if needs_postgres and not config.postgres_dsn:
        raise UsageError(
            "no Postgres configured: set SPENDGATE_POSTGRES_DSN or pass --dsn"
        )
    if needs_redis:
        check_redis_url(config.redis_url)
    return config


def check_redis_url(url: str | None) -> None:
    """Refuse a missing or malformed Redis URL before anything connects (the
    flusher and the reconcile build their own clients from it)."""
    from redis.asyncio.connection import parse_url

    from spendgate.config import redact_url

    if not url:
        raise UsageError(
            "SPENDGATE_REDIS_URL is not set: point it at the Redis your services use"
        )
    try:
        parse_url(url)
    except ValueError as exc:
        raise UsageError(
            f"invalid settings: invalid redis_url {redact_url(url)}: {exc}"
        ) from None


def run(body: Body) -> int:
    """Run ``body`` on a fresh event loop; map what it raises to an exit code.

    Exceptions that are neither spendgate's nor a driver's propagate (a bug
    should show its traceback).
    """
    try:
        return int(asyncio.run(body()))
    except KeyboardInterrupt:
        return fail("interrupted", ExitCode.FAILURE)
    except UsageError as exc:
        return fail(str(exc), ExitCode.USAGE)
    except Exception as exc:
        if output_closed(exc):
            return output_lost()
        mapped = _exit_of(exc)
        if mapped is None:
            raise
        return fail(*mapped)


def output_closed(exc: BaseException) -> bool:
    """Whether ``exc`` is the command's own output failing: a pipe whose
    reader has gone (``spendgate ... | head``), raised by a write of the
    CLI's code (the last spendgate frame it passed through is the CLI's).

    A store's broken connection is not this: the drivers wrap theirs in
    their own errors (redis-py's ``ConnectionError``, asyncpg's).
    """
    if not isinstance(exc, BrokenPipeError):
        return False
    module = ""
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_globals.get("__name__", "")
        if name.startswith("spendgate"):
            module = name
        tb = tb.tb_next
    return module.startswith("spendgate.cli")


def output_lost() -> ExitCode:
    """Exit 1, quietly for what is left: the output could not be written,
    but what the command did is done (not "unavailable": a credit retried
    on that word would be added twice)."""
    try:
        # What is still buffered for the closed pipe would fail again at exit.
        fd = sys.stdout.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)
    except (AttributeError, OSError, ValueError):
        pass  # (a stdout with no descriptor: nothing is flushed at exit)
    return fail(
        "the output could not be written (its reader closed it); "
        "what the command did is done",
        ExitCode.FAILURE,
    )


def run_on_budget(work: Callable[[BudgetManager], Awaitable[int]]) -> int:
    """Run an operator command on a ``BudgetManager`` over the configured
    Redis (never the embedded store)."""

    async def body() -> int:
        from spendgate.manager import BudgetManager

        config = settings(needs_redis=True)
        async with BudgetManager(config) as budget:
            return await work(budget)

    return run(body)


def _exit_of(exc: Exception) -> tuple[str, ExitCode] | None:
    """The message and exit code of ``exc``, ``None`` for a bug."""
    if isinstance(exc, ConfigurationError):  # (its message is redacted)
        return f"invalid settings: {exc}", ExitCode.USAGE
    dsn_problem = _malformed_dsn(exc)
    if dsn_problem is not None:
        return f"invalid settings: the Postgres DSN: {dsn_problem}", ExitCode.USAGE
    if isinstance(exc, SpendgateError):
        code = outcome_of(exc).exit_code
        if code is ExitCode.FAILURE:
            # Not an outcome a user can act on by itself: name what it was.
            return f"{type(exc).__name__}: {exc}", code
        return str(exc), code
    return _driver_error(exc)


def _malformed_dsn(exc: BaseException) -> BaseException | None:
    """asyncpg's refusal to parse the DSN, found in ``exc`` or its cause.

    asyncpg raises a ``ValueError`` (its ``ClientConfigurationError`` is one)
    from its connection set-up, before any connection is tried, for a DSN it
    cannot read: that is a settings error (exit 2), not an unavailable
    server, even when the ledger wrapped it in ``LedgerUnavailableError``.
    (asyncpg's ``DataError`` is a ``ValueError`` too, but comes from a query.)
    """
    for candidate in (exc, exc.__cause__):
        if isinstance(candidate, ValueError) and _passed_through(
            candidate, "asyncpg.connect_utils"
        ):
            return candidate
    return None


def _passed_through(exc: BaseException, module: str) -> bool:
    """Whether ``exc`` was raised in, or through, a function of ``module``."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__") == module:
            return True
        tb = tb.tb_next
    return False


def _driver_error(exc: Exception) -> tuple[str, ExitCode] | None:
    """The message and exit code of a driver's error, ``None`` for any other."""
    from redis import exceptions as redis_errors

    unavailable = ExitCode.UNAVAILABLE
    if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError):
        return f"Redis is unavailable: {exc}", unavailable
    if isinstance(exc, redis_errors.RedisClusterException):
        # (redis-py's RedisCluster: the flusher, scans, rebucket; not a RedisError)
        return _cluster_error(exc)
    if isinstance(exc, redis_errors.RedisError):
        return f"{type(exc).__name__}: {exc}", ExitCode.FAILURE
    if isinstance(exc, OSError):
        # A refused or reset connection, an unknown host: the server is not there.
        return f"{type(exc).__name__}: {exc}", unavailable
    if type(exc).__module__.startswith("asyncpg"):
        from asyncpg.exceptions import (
            InvalidAuthorizationSpecificationError,
            InvalidCatalogNameError,
        )

        from spendgate.ledger.pg import is_unavailable

        # Postgres answered: the DSN names a database or a role (or a
        # password: its subclass) it does not have.
        lacking = InvalidCatalogNameError | InvalidAuthorizationSpecificationError
        if isinstance(exc, lacking):
            return f"invalid settings: the Postgres DSN: {exc}", ExitCode.USAGE
        code = unavailable if is_unavailable(exc) else ExitCode.FAILURE
        return f"Postgres: {type(exc).__name__}: {exc}", code
    return None


def _cluster_error(exc: Exception) -> tuple[str, ExitCode]:
    """The message and exit code of an error of redis-py's ``RedisCluster``:
    the node named is not a cluster node or the URL names what a cluster
    does not have (a settings error, as ``BudgetManager`` says it), no node
    answered or a slot is served by none (unavailable), else a failure."""
    from redis import exceptions as redis_errors

    if "Cluster mode is not enabled" in str(exc):
        return (
            "invalid settings: redis_cluster=True, but the node of redis_url is "
            "not a cluster node",
            ExitCode.USAGE,
        )
    if "in cluster mode" in str(exc):  # (a database other than 0, a socket path)
        return f"invalid settings: redis_cluster=True: {exc}", ExitCode.USAGE
    unreachable = (
        redis_errors.RedisClusterUnreachableError,
        redis_errors.SlotNotCoveredError,
    )
    if isinstance(exc, unreachable):
        return f"Redis is unavailable: {exc}", ExitCode.UNAVAILABLE
    return f"{type(exc).__name__}: {exc}", ExitCode.FAILURE
