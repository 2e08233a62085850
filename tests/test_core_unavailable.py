"""Fail closed: a refused connection, a hung socket or a timeout refuse admission.

"Down" is a port nothing listens on; "hanging" is a local TCP server that
accepts and never answers. Admission must raise ``BudgetUnavailableError``
(catchable as ``BudgetExceededError``) within the configured timeout, not
after redis-py's default retries; with ``fail_open=True`` it admits instead.
These need no Redis server at all.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest

from spendgate import (
    BudgetConfig,
    BudgetExceededError,
    BudgetManager,
    BudgetUnavailableError,
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never replies."""
    held: list[asyncio.StreamWriter] = []

    async def accept(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield int(port)
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


def _config(port: int, **extra: object) -> BudgetConfig:
    return BudgetConfig(
        redis_url=f"redis://127.0.0.1:{port}/0",
        redis_timeout_seconds=0.2,
        redis_connect_timeout_seconds=0.2,
        **extra,  # type: ignore[arg-type]
    )


async def _assert_refused_fast(budget: BudgetManager) -> None:
    for call in (
        lambda: budget.check_availability("alice", None, "1"),
        lambda: budget.reserve("alice", "1"),
    ):
        started = time.monotonic()
        with pytest.raises(BudgetUnavailableError) as refused:
            await call()
        # Generous bound: this checks "no retries, no hang", not speed.
        assert time.monotonic() - started < 2.0
        assert isinstance(refused.value, BudgetExceededError)
        assert "unavailable" in str(refused.value)


async def test_redis_down_fails_closed() -> None:
    async with BudgetManager(_config(_free_port())) as budget:
        await _assert_refused_fast(budget)


async def test_redis_hanging_fails_closed(silent_server: int) -> None:
    async with BudgetManager(_config(silent_server)) as budget:
        await _assert_refused_fast(budget)


async def test_fail_open_admits_when_down(silent_server: int) -> None:
    async with BudgetManager(_config(silent_server, fail_open=True)) as budget:
        assert await budget.check_availability("alice", None, "1") is True
        # A lease is never granted without the store, even failing open.
        with pytest.raises(BudgetUnavailableError):
            await budget.reserve("alice", "1")


async def test_bad_input_is_rejected_before_any_network(silent_server: int) -> None:
    from spendgate import InvalidAmountError

    async with BudgetManager(_config(silent_server)) as budget:
        # (the silent server never answers: a call that reached it first
        # would end in BudgetUnavailableError, not in the input's error)
        with pytest.raises(InvalidAmountError):
            await budget.check_availability("alice", None, "nan")


async def test_closed_manager_cannot_be_reused() -> None:
    budget = BudgetManager(_config(_free_port()))
    await budget.aclose()
    with pytest.raises(RuntimeError, match="reopen"):
        await budget.check_availability("alice")
