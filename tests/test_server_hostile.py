"""Hostile and broken clients: a body cut off mid-way, a body that stalls.

How: the app runs under a real uvicorn server in the test's event loop, on a
free port, and the test speaks raw HTTP/1.1 over a socket, as the fault
probe did. A client that sends half a body and hangs up must cost one log
line (spendgate's, at INFO) and no traceback in uvicorn's log; a client that
sends half a body and stalls must get a 408 with ``Connection: close`` once
``body_timeout_seconds`` has passed, and the connection must then be closed
by the server (the read sees EOF), not held open. The same two cases are
also driven in process through the ASGI interface, where the disconnect must
not raise out of the app.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from loguru import logger

from spendgate import BudgetConfig
from spendgate.server import create_app
from spendgate.server.body import BODY_TIMEOUT_SECONDS

KEY = "k"
PARTIAL = (
    b"POST /spend HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer k\r\n"
    b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    b'{"user_id": "u", "cost": '
)


def _app(**options: Any) -> FastAPI:
    return create_app(BudgetConfig(key_prefix="hostile"), api_keys=[KEY], **options)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def loguru_lines() -> Any:
    lines: list[str] = []
    sink = logger.add(lambda message: lines.append(str(message)), level="DEBUG")
    yield lines
    logger.remove(sink)


@pytest.fixture
async def served() -> AsyncIterator[int]:
    """A uvicorn server of an app with a 0.5 s body timeout; yields its port."""
    port = _free_port()
    config = uvicorn.Config(
        _app(body_timeout_seconds=0.5),
        host="127.0.0.1",
        port=port,
        log_level="info",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started
    yield port
    server.should_exit = True
    await asyncio.wait_for(task, 10)


def test_the_default_timeout_is_sane() -> None:
    # Long enough for any service to send 64 KiB; short enough that a
    # stalled client does not hold a worker's connection for minutes.
    assert 1 <= BODY_TIMEOUT_SECONDS <= 60


async def test_a_disconnect_mid_body_is_one_log_line(
    served: int, loguru_lines: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    reader, writer = await asyncio.open_connection("127.0.0.1", served)
    writer.write(PARTIAL)
    await writer.drain()
    await asyncio.sleep(0.1)
    writer.close()
    await writer.wait_closed()
    for _ in range(100):
        if any("disconnected" in line for line in loguru_lines):
            break
        await asyncio.sleep(0.02)
    ours = [line for line in loguru_lines if "spendgate server" in line]
    assert len(ours) == 1, ours
    assert "client disconnected before sending the whole body of POST /spend" in ours[0]
    assert "| INFO " in ours[0]
    assert not any(record.exc_info for record in caplog.records)
    assert "Exception in ASGI application" not in caplog.text
    assert "Traceback" not in "".join(loguru_lines)


async def test_a_stalled_body_times_out_and_is_disconnected(served: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served)
    writer.write(PARTIAL)
    await writer.drain()
    started = time.monotonic()
    answer = await asyncio.wait_for(reader.read(), 5)  # until the server closes
    waited = time.monotonic() - started
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer
    assert b"connection: close" in head.lower()
    assert b"not received within 0.5 s" in body
    assert 0.4 <= waited < 3


async def _drive(app: FastAPI, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One request straight through ASGI: ``messages`` are what ``receive``
    returns, in order; after them it blocks (a client that sends nothing)."""
    pending = list(messages)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/spend",
        "raw_path": b"/spend",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"authorization", b"Bearer k"),
            (b"content-type", b"application/json"),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("t", 80),
    }
    await asyncio.wait_for(app(scope, receive, send), 5)
    return sent


async def test_in_process_a_disconnect_does_not_raise(loguru_lines: list[str]) -> None:
    sent = await _drive(
        _app(),
        [
            {"type": "http.request", "body": b'{"user_id": ', "more_body": True},
            {"type": "http.disconnect"},
        ],
    )
    assert sent[0]["status"] == 499
    assert not any("ERROR" in line for line in loguru_lines)


async def test_in_process_a_stalled_body_is_408() -> None:
    sent = await _drive(
        _app(body_timeout_seconds=0.2),
        [{"type": "http.request", "body": b'{"user_id": ', "more_body": True}],
    )
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
