"""Postgres passwords never reach an error, a log line or the output.

How: every form a password can take in a DSN or URL (user-info, also with
an unencoded ``#``, ``@`` or ``/``; ``?password=`` and ``&sslpassword=``;
libpq's key/value pairs, quoted or not) goes through ``redact_url`` and
``redact_secrets``, then to each ledger entry point against a port where no
server listens (or a malformed DSN): the library's errors (message, cause,
formatted traceback), the flusher's log lines, and the output of ``spendgate
migrate``, ``flush --once``, ``report`` and ``reconcile`` run as processes
are searched for the secret.
"""

from __future__ import annotations

import asyncio
import os
import sys
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from loguru import logger

from conftest import REDIS_URL
from pg_server import wait_for
from redis_server import free_port
from spendgate import Analytics, BudgetConfig, Flusher
from spendgate.config import redact_secrets, redact_url
from spendgate.core.keys import Keys
from spendgate.errors import ConfigurationError, LedgerUnavailableError
from spendgate.ledger.migrations import migrate_dsn
from spendgate.ledger.reconcile import reconcile

SECRET = "Zq7s3cr3t"


@pytest.fixture(autouse=True)
async def _no_keys_left() -> AsyncIterator[None]:
    """The flushers and commands here make the "sgdsn" deployment's ledger
    stream (and its consumer group): deleted after each test."""
    yield
    client = aioredis.from_url(REDIS_URL)
    try:
        keys = [k async for k in client.scan_iter(match="sgdsn:*")]
        if keys:
            await client.delete(*keys)
    except (aioredis.RedisError, OSError):
        pass  # (a test that needs no Redis, on a machine without one)
    finally:
        await client.aclose()


def dsn_forms(port: int) -> dict[str, str]:
    """Every way a password is written, each to a port nobody listens on."""
    at = f"127.0.0.1:{port}"
    return {
        "userinfo": f"postgresql://app:{SECRET}@{at}/db",
        "percent-encoded": f"postgresql://app:{SECRET}%40x@{at}/db",
        "unencoded #": f"postgresql://app:{SECRET[:4]}#{SECRET[4:]}@{at}/db",
        "unencoded @": f"postgresql://app:{SECRET[:4]}@{SECRET[4:]}@{at}/db",
        "unencoded /": f"postgresql://app:{SECRET[:4]}/{SECRET[4:]}@{at}/db",
        "?password=": f"postgresql://app@{at}/db?password={SECRET}",
        "&sslpassword=": f"postgres://app@{at}/db?sslmode=disable&sslpassword={SECRET}",
        "key/value": f"host=127.0.0.1 port={port} user=app password={SECRET}",
        "key/value quoted": (
            f"host=127.0.0.1 port={port} password = '{SECRET} x\\'y' dbname=db"
        ),
    }


#: the forms a parser cuts the password of, at the unencoded delimiter
CUT_FORMS = {"unencoded #", "unencoded @", "unencoded /"}


def assert_hidden(text: str, *context: object) -> None:
    """Neither the secret nor a piece of it (a parser cut at a delimiter)."""
    for piece in (SECRET, SECRET[:4], SECRET[4:]):
        assert piece not in text, (*context, text)


@pytest.mark.parametrize("form", list(dsn_forms(5432)))
def test_redact_url_hides_every_form(form: str) -> None:
    dsn = dsn_forms(5432)[form]
    redacted = redact_url(dsn)
    assert_hidden(redacted)
    assert "***" in redacted
    assert "127.0.0.1" in redacted  # where it points stays readable
    # A driver's message quoting the DSN, the password, or a piece of it
    # where the DSN cuts it.
    piece = SECRET[4:] if form in CUT_FORMS else SECRET
    message = redact_secrets(f"failed: {dsn} ({SECRET}) '{piece}'", dsn)
    assert_hidden(message, form)


def test_redact_url_keeps_what_is_not_secret() -> None:
    assert redact_url("postgresql://app:pw@pg:5432/ledger") == (
        "postgresql://app:***@pg:5432/ledger"
    )
    assert redact_url("postgresql://app@pg/ledger?sslmode=require") == (
        "postgresql://app@pg/ledger?sslmode=require"
    )
    assert redact_url("host=pg dbname=ledger") == "host=pg dbname=ledger"
    assert redact_url("redis://h:6379/0?password=pw&db=1") == (
        "redis://h:6379/0?password=***&db=1"
    )
    assert redact_url("rediss://:p#w@h:6380/0") == "rediss://:***@h:6380/0"
    assert redact_url(None) == "<none>"
    assert "pw" not in str(BudgetConfig(postgres_dsn="host=h password=pw").describe())


def _entry_points(dsn: str) -> dict[str, Callable[[], Awaitable[Any]]]:
    config = BudgetConfig(redis_url=REDIS_URL, postgres_dsn=dsn, key_prefix="sgdsn")

    async def flush() -> None:
        async with Flusher(config) as flusher:
            await flusher.connect()

    async def report() -> None:
        async with Analytics(config) as analytics:
            await analytics.stats()

    return {
        "migrate": lambda: migrate_dsn(dsn),
        "flush": flush,
        "report": report,
        "reconcile": lambda: reconcile(config),
    }


@pytest.mark.postgres
async def test_no_library_error_shows_a_password() -> None:
    for form, dsn in dsn_forms(free_port()).items():
        for name, call in _entry_points(dsn).items():
            with pytest.raises((LedgerUnavailableError, ConfigurationError)) as info:
                await call()
            shown = "".join(traceback.format_exception(info.value))
            assert_hidden(shown, form, name)
            assert "***" in str(info.value), (form, name, str(info.value))


@pytest.mark.postgres
async def test_a_malformed_dsn_is_a_settings_error_not_an_outage() -> None:
    for dsn in (
        dsn_forms(5432)["key/value"],
        dsn_forms(5432)["unencoded #"],
        "postgresql://app:pw@127.0.0.1:notaport/db",
    ):
        with pytest.raises(ConfigurationError, match="invalid Postgres DSN"):
            await migrate_dsn(dsn)


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["redis"], indirect=True)
async def test_the_flushers_log_lines_show_no_password(
    redis_client: aioredis.Redis, key_prefix: str
) -> None:
    dsn = dsn_forms(free_port())["?password="]
    # An entry to move, so each pass needs Postgres.
    entry = {"e": "e1", "k": "spend", "t": "1", "u": "u", "a": "1"}
    await redis_client.xadd(Keys(key_prefix).ledger, entry)  # type: ignore[arg-type]
    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG")
    config = BudgetConfig(
        redis_url=REDIS_URL,
        postgres_dsn=dsn,
        key_prefix=key_prefix,
        flush_interval_seconds=0.01,
    )
    flusher = Flusher(config, max_backoff_seconds=0.02)
    try:
        task = asyncio.create_task(flusher.run())
        await wait_for(lambda: flusher.consecutive_failures >= 3)
        flusher.stop()
        await task
    finally:
        logger.remove(sink)
    failures = [line for line in lines if "cannot flush" in line]
    assert failures and all("password=***" in line for line in failures)
    assert_hidden("".join(lines))
    assert flusher.last_error is not None
    assert_hidden(flusher.last_error)


@pytest.mark.postgres
async def test_no_ledger_command_prints_a_password() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPENDGATE_")}
    env.update(SPENDGATE_REDIS_URL=REDIS_URL, SPENDGATE_KEY_PREFIX="sgdsn")
    commands = (["migrate"], ["flush", "--once"], ["report", "users"], ["reconcile"])

    async def run(dsn: str, command: list[str]) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "spendgate.cli",
            *command,
            env={**env, "SPENDGATE_POSTGRES_DSN": dsn},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        return int(proc.returncode or 0), out.decode()

    runs = [
        (form, command, dsn)
        for form, dsn in dsn_forms(free_port()).items()
        for command in commands
    ]
    results = await asyncio.gather(*(run(dsn, command) for _, command, dsn in runs))
    for (form, command, _), (code, out) in zip(runs, results, strict=True):
        assert code in (2, 4), (form, command, out)  # settings or unavailable
        assert "***" in out, (form, command, out)
        assert_hidden(out, form, command)
