"""The ASGI middleware, in front of a small FastAPI app, driven in process.

How: ``httpx.AsyncClient(transport=httpx.ASGITransport(app))`` sends real
HTTP requests through ``BudgetMiddleware`` (added with FastAPI's
``add_middleware``) into endpoints that record what they were given. Every
budget comes from ``make_budget`` (real Redis and fakeredis, with the fake
clock, which ``Retry-After`` is counted from); an unreachable Redis (port 1)
plays the store that is down. Checked: admission before the endpoint, 429 with
``Retry-After`` and a JSON body when refused, 503 when the store is down and
failing closed, 400 for a bad id, leases settled or released after the
response, and the ``after`` hook.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from conftest import FakeClock, MakeBudget
from spendgate import BudgetConfig, BudgetManager, Lease
from spendgate.integrations.asgi import BudgetMiddleware


def user_of(scope: Any) -> str | None:
    """The caller's id from the ``x-user`` header; no header, no guard."""
    for name, value in scope["headers"]:
        if name == b"x-user":
            return str(value.decode())
    return None


def estimate_of(scope: Any) -> str:
    """The worst case of a request: ``x-estimate`` header, default 0.10."""
    for name, value in scope["headers"]:
        if name == b"x-estimate":
            return str(value.decode())
    return "0.10"


class Endpoints:
    """A FastAPI app whose endpoints note every call they receive."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.app = FastAPI()

        @self.app.post("/chat")
        async def chat(request: Request) -> dict[str, Any]:
            self.calls.append("chat")
            budget: BudgetManager = request.app.state.budget
            # The endpoint records what the call really cost (a fact).
            await budget.record_spend(request.state.spendgate_user, "0.04")
            return {"user": request.state.spendgate_user}

        @self.app.post("/held")
        async def held(request: Request) -> dict[str, Any]:
            self.calls.append("held")
            lease: Lease = request.state.spendgate_lease
            lease.actual_cost = Decimal("0.03")
            lease.model = "gpt-4o"
            return {"lease": lease.id}

        @self.app.post("/held-no-cost")
        async def held_no_cost(request: Request) -> dict[str, Any]:
            self.calls.append("held-no-cost")
            return {}

        @self.app.post("/boom")
        async def boom(request: Request) -> None:
            self.calls.append("boom")
            raise RuntimeError("endpoint failed")

        @self.app.get("/health")
        async def health() -> dict[str, str]:
            self.calls.append("health")
            return {"ok": "yes"}


def client_for(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


@pytest.fixture
def endpoints() -> Endpoints:
    return Endpoints()


async def test_admitted_request_reaches_the_endpoint(
    make_budget: MakeBudget, endpoints: Endpoints
) -> None:
    budget = make_budget(daily_user_limit=1)
    endpoints.app.state.budget = budget
    endpoints.app.add_middleware(
        BudgetMiddleware, budget=budget, user=user_of, estimate=estimate_of
    )
    async with client_for(endpoints.app) as client:
        response = await client.post("/chat", headers={"x-user": "alice"})
    assert response.status_code == 200
    assert response.json() == {"user": "alice"}
    assert endpoints.calls == ["chat"]
    usage = await budget.get_usage("alice")
    assert usage["user"].daily.spent == Decimal("0.04")
    assert usage["user"].held == 0  # check only: nothing held


async def test_refusal_is_a_429_with_retry_after_and_the_endpoint_never_runs(
    make_budget: MakeBudget, endpoints: Endpoints, clock: FakeClock
) -> None:
    budget = make_budget(daily_user_limit="0.05")
    endpoints.app.state.budget = budget
    endpoints.app.add_middleware(
        BudgetMiddleware, budget=budget, user=user_of, estimate=estimate_of, clock=clock
    )
    async with client_for(endpoints.app) as client:
        response = await client.post("/chat", headers={"x-user": "bob"})
    assert response.status_code == 429
    # The fake clock reads 12:00 UTC: the daily window resets in 12 hours.
    assert response.headers["retry-after"] == str(12 * 3600)
    body = response.json()
    assert body["status"] == "refused"
    assert (body["scope"], body["scope_id"], body["window"]) == ("user", "bob", "daily")
    assert Decimal(body["limit"]) == Decimal("0.05")
    assert Decimal(body["requested"]) == Decimal("0.10")
    assert body["retry_after_seconds"] == 12 * 3600
    assert endpoints.calls == []
    assert (await budget.get_usage("bob"))["user"].daily.spent == 0


async def test_balance_refusal_asks_to_retry_in_a_minute(
    make_budget: MakeBudget, endpoints: Endpoints
) -> None:
    budget = make_budget(enforce_balance=True)
    endpoints.app.add_middleware(
        BudgetMiddleware, budget=budget, user=user_of, estimate=estimate_of
    )
    async with client_for(endpoints.app) as client:
        response = await client.post("/chat", headers={"x-user": "broke"})
    assert response.status_code == 429
    assert response.json()["window"] == "balance"
    assert response.headers["retry-after"] == "60"
    assert endpoints.calls == []


async def test_requests_without_a_user_are_not_guarded(
    make_budget: MakeBudget, endpoints: Endpoints
) -> None:
    budget = make_budget(daily_user_limit=0)
    endpoints.app.add_middleware(BudgetMiddleware, budget=budget, user=user_of)
    async with client_for(endpoints.app) as client:
        assert (await client.get("/health")).status_code == 200
        refused = await client.get("/health", headers={"x-user": "zero-cap"})
    assert refused.status_code == 429
    assert endpoints.calls == ["health"]


async def test_bad_user_id_is_a_400(
    make_budget: MakeBudget, endpoints: Endpoints
) -> None:
    budget = make_budget()
    endpoints.app.add_middleware(
        BudgetMiddleware, budget=budget, user=lambda scope: "x" * 10_000
    )
    async with client_for(endpoints.app) as client:
        response = await client.get("/health")
    assert response.status_code == 400
    assert response.json()["status"] == "invalid"
    assert endpoints.calls == []


async def test_held_lease_is_settled_at_the_endpoints_actual_cost(
    make_budget: MakeBudget, endpoints: Endpoints
) -> None:
    budget = make_budget(daily_user_limit=1)
    endpoints.app.add_middleware(
        BudgetMiddleware,
        budget=budget,
        user=user_of,
        estimate=estimate_of,
        project=lambda scope: "atlas",
        hold=True,
    )
    async with client_for(endpoints.app) as client:
        ok = await client.post("/held", headers={"x-user": "carol"})
        no_cost = await client.post("/held-no-cost", headers={"x-user": "carol"})
        failed = await client.post("/boom", headers={"x-user": "carol"})
    assert (ok.status_code, no_cost.status_code, failed.status_code) == (200, 200, 500)
    usage = await budget.get_usage("carol", "atlas")
    # 0.03 settled; the success without a cost at its estimate (0.10); the
    # failed request released.
    assert usage["user"].daily.spent == Decimal("0.13")
    assert usage["project"].daily.spent == Decimal("0.13")
    assert usage["user"].held == 0


async def test_held_request_over_budget_is_refused(
    make_budget: MakeBudget, endpoints: Endpoints
) -> None:
    budget = make_budget(daily_user_limit="0.15")
    endpoints.app.add_middleware(
        BudgetMiddleware, budget=budget, user=user_of, estimate=estimate_of, hold=True
    )
    # An open lease of someone else's request counts against the cap.
    await budget.reserve("dave", "0.10")
    async with client_for(endpoints.app) as client:
        response = await client.post("/held", headers={"x-user": "dave"})
    assert response.status_code == 429
    assert Decimal(response.json()["held"]) == Decimal("0.10")
    assert endpoints.calls == []


async def test_after_hook_gets_the_status_and_the_lease(
    make_budget: MakeBudget, endpoints: Endpoints
) -> None:
    budget = make_budget()
    seen: list[tuple[int | None, Lease | None]] = []

    async def after(scope: Any, status: int | None, lease: Lease | None) -> None:
        seen.append((status, lease))
        assert lease is not None
        await budget.settle(lease, "0.01")

    endpoints.app.add_middleware(
        BudgetMiddleware,
        budget=budget,
        user=user_of,
        estimate=estimate_of,
        hold=True,
        after=after,
    )
    async with client_for(endpoints.app) as client:
        await client.post("/held-no-cost", headers={"x-user": "erin"})
        await client.post("/boom", headers={"x-user": "erin"})
    assert [status for status, _ in seen] == [200, None]
    assert (await budget.get_usage("erin"))["user"].daily.spent == Decimal("0.02")


@pytest.fixture
async def down_budget(tmp_path: Path) -> AsyncIterator[BudgetManager]:
    config = BudgetConfig(
        redis_url="redis://127.0.0.1:1/0", key_prefix="down", spool_path=tmp_path / "s"
    )
    budget = BudgetManager(config)
    yield budget
    await budget.aclose()


@pytest.mark.parametrize("hold", [False, True])
async def test_store_down_is_a_503_failing_closed(
    down_budget: BudgetManager, endpoints: Endpoints, hold: bool
) -> None:
    endpoints.app.add_middleware(
        BudgetMiddleware,
        budget=down_budget,
        user=user_of,
        estimate=estimate_of,
        hold=hold,
    )
    async with client_for(endpoints.app) as client:
        response = await client.post("/held-no-cost", headers={"x-user": "frank"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["status"] == "unavailable"
    assert endpoints.calls == []


@pytest.mark.parametrize("hold", [False, True])
async def test_store_down_with_fail_open_lets_requests_through(
    tmp_path: Path, endpoints: Endpoints, hold: bool
) -> None:
    config = BudgetConfig(
        redis_url="redis://127.0.0.1:1/0",
        key_prefix="down",
        spool_path=tmp_path / "s",
        fail_open=True,
    )
    budget = BudgetManager(config)
    endpoints.app.add_middleware(
        BudgetMiddleware, budget=budget, user=user_of, estimate=estimate_of, hold=hold
    )
    try:
        async with client_for(endpoints.app) as client:
            response = await client.post("/held-no-cost", headers={"x-user": "gina"})
    finally:
        await budget.aclose()
    assert response.status_code == 200
    assert endpoints.calls == ["held-no-cost"]


async def test_non_http_scopes_pass_through(make_budget: MakeBudget) -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    def no_user(scope: Any) -> str:
        raise AssertionError("not asked for a lifespan scope")

    middleware = BudgetMiddleware(app, make_budget(), user=no_user)

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: Any) -> None:
        return None

    await middleware({"type": "lifespan"}, receive, send)
    assert seen == ["lifespan"]


async def test_the_readme_example_answers_a_request_without_a_user(
    make_budget: MakeBudget,
) -> None:
    """The README's endpoint reads request.state.spendgate_lease: a request
    the middleware let through unguarded (no user header) finds it None
    instead of failing with a 500."""
    budget = make_budget(daily_user_limit=1)
    app = FastAPI()

    @app.post("/chat")
    async def chat(request: Request) -> dict[str, Any]:
        lease = request.state.spendgate_lease
        if lease is not None:
            lease.actual_cost = "0.0123"
        return {"guarded": lease is not None, "user": request.state.spendgate_user}

    app.add_middleware(
        BudgetMiddleware, budget=budget, user=user_of, estimate=estimate_of, hold=True
    )
    async with client_for(app) as client:
        anonymous = await client.post("/chat")
        named = await client.post("/chat", headers={"x-user": "alice"})
    assert anonymous.status_code == 200
    assert anonymous.json() == {"guarded": False, "user": None}
    assert named.json() == {"guarded": True, "user": "alice"}
    assert (await budget.get_usage("alice"))["user"].daily.spent == Decimal("0.0123")
