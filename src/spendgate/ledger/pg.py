"""The Postgres edge: asyncpg imported on first use, connections, error classes.

``import spendgate`` never imports asyncpg; the flusher, the migrations, the
analytics and the reconcile call :func:`asyncpg_module` when they first need
it, which names the extra to install when it is missing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from spendgate.config import redact_secrets, redact_url
from spendgate.errors import ConfigurationError, LedgerUnavailableError

if TYPE_CHECKING:
    import asyncpg

#: SQLSTATE classes that mean "Postgres is not there right now": connection
#: exceptions, insufficient resources (too many connections, disk full),
#: operator intervention (shutdown, starting up), system errors
_UNAVAILABLE_CLASSES = ("08", "53", "57", "58")
#: SQLSTATE classes of errors caused by one row's content rather than the
#: server's state: data exceptions, integrity violations, program limits
#: (an index row too large for a very long id)
_DATA_ERROR_CLASSES = ("22", "23", "54")


def asyncpg_module() -> Any:
    """The ``asyncpg`` module, imported now.

    :raise ConfigurationError: when it is not installed
    """
    try:
        import asyncpg
    except ImportError:
        raise ConfigurationError(
            "the Postgres ledger needs asyncpg: pip install 'spendgate[postgres]'"
        ) from None
    return asyncpg


def database_url(environ: Mapping[str, str] | None = None) -> str | None:
    """``DATABASE_URL``, for the ledger commands, when
    ``SPENDGATE_POSTGRES_DSN`` is not set (it wins when both are).

    Many platforms and tools (bursar among them) export ``DATABASE_URL``; the
    ledger commands fall back to it. ``BudgetConfig`` does not read it:
    a configured DSN also means "a flusher drains the stream" (the stream is
    then uncapped), which an application's own ``DATABASE_URL`` must not.

    :param environ: the environment; ``os.environ`` when omitted
    """
    env = os.environ if environ is None else environ
    if (env.get("SPENDGATE_POSTGRES_DSN") or "").strip():
        return None
    return (env.get("DATABASE_URL") or "").strip() or None


@contextlib.contextmanager
def ledger_schema() -> Iterator[None]:
    """Queries of the ledger table: a database without it, or with an older
    one, is :class:`ConfigurationError` saying to migrate (not the driver's
    error about a relation).

    :raise ConfigurationError: the table or a column is missing
    """
    module = asyncpg_module()
    try:
        yield
    except module.UndefinedTableError as exc:
        raise ConfigurationError(
            "the ledger table is missing: run `spendgate migrate`"
        ) from exc
    except module.UndefinedColumnError as exc:
        raise ConfigurationError(
            "the ledger table is older than this spendgate: run `spendgate migrate`"
        ) from exc


def require_dsn(dsn: str | None) -> str:
    """``dsn``, or a clear error when no Postgres is configured."""
    if not dsn:
        raise ConfigurationError(
            "no Postgres is configured: set SPENDGATE_POSTGRES_DSN "
            "(or BudgetConfig(postgres_dsn=...))"
        )
    return dsn


async def connect(
    dsn: str, *, timeout: float = 10.0, **kwargs: Any
) -> asyncpg.Connection:
    """One asyncpg connection. No error it raises shows the DSN's password.

    :raise LedgerUnavailableError: when the server cannot be reached
    :raise ConfigurationError: when the DSN cannot be used (malformed, or a
        key/value DSN, which asyncpg does not read)
    """
    module = asyncpg_module()
    try:
        conn: asyncpg.Connection = await module.connect(dsn, timeout=timeout, **kwargs)
    except Exception as exc:
        error = _redacted_error(exc, dsn, module)
        if error is None:
            raise  # the driver's own error (a refused login...), nothing secret
        # A traceback prints the cause's message too: chained only when clean.
        clean = redact_secrets(str(exc), dsn) == str(exc)
        raise error from (exc if clean and error is not exc else None)
    return conn


def _redacted_error(exc: Exception, dsn: str, module: Any) -> Exception | None:
    """What to raise for ``exc``, a failure to connect to ``dsn``, with the
    DSN's passwords taken out of its message; ``None``: ``exc`` as it is."""
    message = redact_secrets(str(exc), dsn)
    detail = f"{type(exc).__name__}: {message}"
    if isinstance(exc, module.ClientConfigurationError | ValueError):
        hint = "" if "://" in dsn else " (use postgresql://user:password@host/db)"
        return ConfigurationError(
            f"invalid Postgres DSN {redact_url(dsn)}{hint}: {detail}"
        )
    if is_unavailable(exc):
        return LedgerUnavailableError(
            f"Postgres at {redact_url(dsn)} is unavailable: {detail}"
        )
    if message != str(exc):
        exc.args = (message,)  # the same error, its type kept for the caller
        return exc
    return None


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the server is gone or busy (retry later), not
    that the request itself is wrong."""
    if isinstance(
        exc, LedgerUnavailableError | OSError | TimeoutError | ConnectionError
    ):
        return True
    module = asyncpg_module()
    if isinstance(exc, module.InterfaceError | module.PostgresConnectionError):
        # InterfaceError: "connection is closed", "another operation is in
        # progress" after a broken connection, ...
        return True
    if isinstance(exc, module.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return state[:2] in _UNAVAILABLE_CLASSES
    return False


def is_data_error(exc: BaseException) -> bool:
    """Whether ``exc`` is Postgres refusing the data itself (retrying the
    same rows cannot help)."""
    state = getattr(exc, "sqlstate", None) or ""
    return state[:2] in _DATA_ERROR_CLASSES
