"""Streaming holds outside LiteLLM: the ``LeaseMeter`` and the ASGI
middleware's streamed responses.

Both backends (``make_budget``). The meter: a use within the hold costs no
round trip; past it the lease grows by a step, or by exactly what is
missing when a step does not fit, so a stream reaches the cap itself; a use
that cannot be held raises and is not counted. The middleware: a FastAPI
endpoint streams chunks of a set cost, metering each before it is sent,
(a) until the cap refuses an extension: the body ends there and exactly
what was sent is charged; (b) until the client disconnects, played by a
raw ASGI ``receive`` that answers ``http.disconnect`` once five chunks went
out (Starlette then cancels the body): exactly those five are charged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from conftest import MakeBudget
from spendgate import BudgetExceededError, BudgetManager
from spendgate.integrations.asgi import BudgetMiddleware
from spendgate.integrations.streaming import LeaseMeter

CHUNK_COST = Decimal("0.01")


async def _spent_and_held(budget: BudgetManager, user: str) -> tuple[Decimal, Decimal]:
    usage = (await budget.get_usage(user))["user"]
    return usage.daily.spent, usage.held


async def test_the_meter_extends_by_steps_and_then_to_the_cap(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(daily_user_limit="1")
    lease = await budget.reserve("ada", "0.3")
    meter = LeaseMeter(budget, lease, step="0.25")
    await meter.reach("0.3")  # within the hold: nothing to extend
    assert (meter.extensions, lease.amount) == (0, Decimal("0.3"))
    await meter.add("0.1")  # past it: one step
    assert (meter.extensions, lease.amount) == (1, Decimal("0.55"))
    await meter.reach("0.9")  # a step short of what is missing: what is missing
    assert (meter.extensions, lease.amount) == (2, Decimal("0.9"))
    await meter.reach("0.95")  # a whole step does not fit: exactly the rest
    assert lease.amount == Decimal("0.95") and meter.used == Decimal("0.95")
    with pytest.raises(BudgetExceededError):
        await meter.reach("1.000001")
    assert meter.used == Decimal("0.95") == lease.actual_cost  # not counted
    assert await _spent_and_held(budget, "ada") == (0, Decimal("0.95"))
    await meter.reach("1")
    record = await budget.settle(lease, lease.actual_cost)
    assert record.amount == 1 and await _spent_and_held(budget, "ada") == (1, 0)


def _app(budget: BudgetManager, chunks: int, sent: list[bytes]) -> FastAPI:
    app = FastAPI()

    @app.post("/stream")
    async def stream(request: Request) -> StreamingResponse:
        meter: LeaseMeter = request.state.spendgate_meter

        async def body() -> AsyncIterator[bytes]:
            for i in range(chunks):
                try:
                    await meter.add(CHUNK_COST)  # before the chunk goes out
                except BudgetExceededError:
                    return  # the budget is spent: end the stream here
                sent.append(f"chunk {i}\n".encode())
                yield sent[-1]

        return StreamingResponse(body())

    app.add_middleware(
        BudgetMiddleware,
        budget=budget,
        user=lambda scope: "ada",
        estimate=lambda scope: "0.02",
        hold=True,
        stream_step="0.04",  # (the hold then runs ahead of the use)
    )
    return app


async def test_a_streamed_response_is_cut_at_the_cap_and_charged_what_it_sent(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(daily_user_limit="0.1")
    sent: list[bytes] = []
    app = _app(budget, chunks=1000, sent=sent)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/stream")
    assert response.status_code == 200
    assert response.content == b"".join(sent) and len(sent) == 10
    assert await _spent_and_held(budget, "ada") == (Decimal("0.1"), 0)


async def test_a_client_that_disconnects_is_charged_what_it_was_sent(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(daily_user_limit="10")
    sent: list[bytes] = []
    app = _app(budget, chunks=1000, sent=sent)
    gone = asyncio.Event()
    received: list[bytes] = []

    async def receive() -> dict[str, Any]:
        if not received:
            received.append(b"")
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            received.append(message["body"])
            if len(received) == 6:  # five chunks (after the request) went out
                gone.set()
                await asyncio.Event().wait()  # the socket never drains again

    scope = {
        "type": "http",
        # (before ASGI 2.4 Starlette listens for the disconnect itself)
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/stream",
        "raw_path": b"/stream",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"t")],
        "client": ("127.0.0.1", 1),
        "server": ("t", 80),
    }
    await asyncio.wait_for(app(scope, receive, send), timeout=5)
    assert received[1:] == sent[:5]
    assert await _spent_and_held(budget, "ada") == (5 * CHUNK_COST, 0)


async def test_without_a_step_there_is_no_meter(make_budget: MakeBudget) -> None:
    budget = make_budget()
    app = FastAPI()
    seen: list[Any] = []

    @app.get("/")
    async def root(request: Request) -> dict[str, str]:
        seen.append(request.state.spendgate_meter)
        return {}

    app.add_middleware(BudgetMiddleware, budget=budget, user=lambda s: "ada", hold=True)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/")).status_code == 200
    assert seen == [None]
