"""What the CLI tests share (tests/test_cli.py, tests/test_cli_environment.py,
and the other CLI test files): the ``prefix`` fixture,
which points ``SPENDGATE_*`` at the real Redis under a key prefix of the
test's own (a daily user cap of 10, balances enforced) and deletes its keys
after; ``_budget_call``, which calls a ``BudgetManager`` method on that Redis
and prefix; ``_run``, which runs a command in process and returns its exit
code and captured output; ``_dead_port``, a local port nothing listens on."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from redis import Redis as SyncRedis

from conftest import REDIS_URL, real_redis_available, service_missing
from spendgate import BudgetConfig, BudgetManager
from spendgate.cli import main


@pytest.fixture
def prefix(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point the CLI at the real Redis under a fresh key prefix."""
    reason = real_redis_available()
    if reason:
        service_missing("Redis", reason)
    key_prefix = f"cli{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("SPENDGATE_REDIS_URL", REDIS_URL)
    monkeypatch.setenv("SPENDGATE_KEY_PREFIX", key_prefix)
    monkeypatch.setenv("SPENDGATE_DAILY_USER_LIMIT", "10")
    monkeypatch.setenv("SPENDGATE_ENFORCE_BALANCE", "true")
    yield key_prefix
    client = SyncRedis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{key_prefix}:*", count=1000):
        client.delete(key)
    client.close()


def _budget_call(method: str, *args: Any, **kwargs: Any) -> Any:
    """Call a BudgetManager method on the CLI's Redis and prefix (from the env)."""

    async def go() -> Any:
        async with BudgetManager(BudgetConfig()) as budget:
            return await getattr(budget, method)(*args, **kwargs)

    return asyncio.run(go())


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
