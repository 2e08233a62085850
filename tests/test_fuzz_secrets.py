"""Hardening: secrets kept out of logs, errors, reprs and the spool.

How: every loguru line (DEBUG and up) is captured while a manager with a
password in its Redis URL and Postgres DSN and an API key fails to connect,
refuses admission, spools facts, opens its breaker and closes; the password,
DSN password and key appear in no log line, no error message, no repr, and no
spool file. A wrong Redis password is not echoed in the error or the logs, and
an invalid Redis URL's error hides the password.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from loguru import logger

from conftest import REDIS_URL, real_redis_available, service_missing
from spendgate import (
    BudgetConfig,
    BudgetManager,
    BudgetUnavailableError,
    ConfigurationError,
    SpendgateError,
)

# -- secrets --------------------------------------------------------------------------

PASSWORD = "s3cret-Redis-pw"
PG_PASSWORD = "s3cret-PG-pw"
API_KEY = "sk-live-s3cret-key"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def captured_logs() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(
        lambda m: lines.append(str(m)), level="DEBUG", backtrace=True, diagnose=True
    )
    yield lines
    logger.remove(sink)


def _assert_no_secret(where: str, text: str) -> None:
    for secret in (PASSWORD, PG_PASSWORD, API_KEY):
        assert secret not in text, f"{secret!r} leaked into {where}: {text[:500]}"


async def test_secrets_never_reach_logs_errors_or_the_spool(
    tmp_path: Path, captured_logs: list[str]
) -> None:
    config = BudgetConfig(
        redis_url=f"redis://:{PASSWORD}@127.0.0.1:{_closed_port()}/0",
        postgres_dsn=f"postgresql://app:{PG_PASSWORD}@127.0.0.1:1/ledger",
        api_keys=API_KEY,
        spool_path=tmp_path,
        breaker_failure_threshold=2,
        breaker_reset_seconds=0.01,
        spool_replay_interval_seconds=0.01,
    )
    texts = [repr(config), str(config), str(config.describe())]
    async with BudgetManager(config) as budget:
        for _ in range(3):
            with pytest.raises(BudgetUnavailableError) as refused:
                await budget.check_availability("alice", None, "1")
            texts += [
                str(refused.value),
                repr(refused.value),
                str(refused.value.__cause__),
            ]
        for _ in range(3):
            assert (await budget.record_spend("alice", "1")).spooled
        await asyncio.sleep(0.1)  # a few replay passes fail, and are logged
        texts.append(repr(budget))
    logged = "\n".join(captured_logs)
    for expected in (
        "using Redis at",
        "unreachable",
        "circuit breaker",
        "spooling facts",
    ):
        assert expected in logged  # the paths that could leak did run
    for line in captured_logs:
        _assert_no_secret("a log line", line)
    for text in texts:
        _assert_no_secret("an error or repr", text)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            _assert_no_secret(
                f"spool file {path.name}", path.read_text(errors="replace")
            )


async def test_a_wrong_password_is_not_echoed(
    captured_logs: list[str], tmp_path: Path
) -> None:
    reason = real_redis_available()
    if reason:
        service_missing("Redis", reason)
    url = REDIS_URL.replace("redis://", f"redis://default:{PASSWORD}@", 1)
    prefix = f"pwtest{uuid.uuid4().hex[:12]}"
    try:
        async with BudgetManager(
            BudgetConfig(redis_url=url, spool_path=tmp_path, key_prefix=prefix)
        ) as budget:
            try:
                await budget.check_availability("alice")
            except SpendgateError as exc:
                _assert_no_secret("the error", f"{exc!r} {exc} {exc.__cause__}")
    finally:
        # A Redis without a password takes any: the check ran and may have
        # written (the holds' due time).
        cleaner = aioredis.Redis.from_url(REDIS_URL)
        keys = [k async for k in cleaner.scan_iter(match=f"{prefix}:*")]
        if keys:
            await cleaner.delete(*keys)
        await cleaner.aclose()
    for line in captured_logs:
        _assert_no_secret("a log line", line)


def test_an_invalid_url_error_hides_the_password() -> None:
    config = BudgetConfig(redis_url=f"nosuch://:{PASSWORD}@host:1/0")
    with pytest.raises(ConfigurationError) as refused:
        BudgetManager(config).redis  # noqa: B018 - connecting is the point
    _assert_no_secret("the error", str(refused.value))
