"""What the in-process server tests share (tests/test_server*.py and the
other tests that drive the app): the API key
the apps accept, the ``Authorization`` header that carries it, and the
``make_client`` fixture (a client of an app over a fresh budget from the
conftest ``make_budget`` fixture, talking through ``httpx.ASGITransport``,
on the budget's fake clock)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from conftest import FakeClock, MakeBudget
from spendgate.server import create_app

KEY = "test-key-1"
AUTH = {"Authorization": f"Bearer {KEY}"}

MakeClient = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def make_client(
    make_budget: MakeBudget, clock: FakeClock
) -> AsyncIterator[Callable[..., httpx.AsyncClient]]:
    """``make_client(**settings)``: a client of an app over a fresh budget."""
    clients: list[httpx.AsyncClient] = []

    def make(
        *, app_options: dict[str, Any] | None = None, **settings: Any
    ) -> httpx.AsyncClient:
        budget = make_budget(**settings)
        options: dict[str, Any] = {"api_keys": [KEY, "other-key"], "clock": clock}
        options.update(app_options or {})
        app = create_app(budget, **options)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://spendgate.test"
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
