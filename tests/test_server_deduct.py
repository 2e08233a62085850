"""The HTTP one-call charge: ``POST /v1/deduct`` and ``POST /v1/deduct/fixed``.

How: the app over a budget of the conftest ``make_budget`` fixture (real
Redis and fakeredis), in process through ``httpx.ASGITransport``; the
budget itself publishes the price book and reads balances and the ledger
back. Checked: a usage priced by the active book (its breakdown and
version, exact strings), an amount with a model, a replay (same entry,
charged once) and a conflict (409), refusals by a cap, the balance, a
model's cap and a team (429, 403, 404) with nothing changed, a fixed job
(on a team's pool too),
and hostile or malformed bodies (422, 413) that change nothing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest

from conftest import FakeClock, MakeBudget
from spendgate import BudgetManager
from spendgate.core.protocol import FIELD
from spendgate.server import create_app
from spendgate.server.deduct_schemas import MAX_TOOL_CALLS
from test_deduct import _snapshot
from test_teams import _snapshot as _team_snapshot

KEY = "deduct-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
BOOK: dict[str, Any] = {
    "version": 1,
    "models": {
        "gpt-4o": "input_tokens * 0.0000025 + output_tokens * 0.00001",
        "_default": "input_tokens * 0.000001 + output_tokens * 0.000003",
    },
    "tools": {"web_search": "tool_calls * 0.01", "_default": "tool_calls * 0"},
    "search": {"costs": "search_queries * 0.005 + search_results * 0.0005"},
    "fixed": {"batch_job": 20},
}
USAGE = {
    "model": "gpt-4o",
    "input_tokens": 1000,
    "output_tokens": 200,
    "tool_calls": [{"name": "web_search"}],
    "search_queries": 2,
}

Served = tuple[BudgetManager, httpx.AsyncClient]


@pytest.fixture
async def serve(
    make_budget: MakeBudget, clock: FakeClock
) -> AsyncIterator[Callable[..., Served]]:
    """``serve(**settings)``: a budget and a client of an app over it."""
    clients: list[httpx.AsyncClient] = []

    def make(**settings: Any) -> Served:
        budget = make_budget(**settings)
        app = create_app(budget, api_keys=[KEY], clock=clock)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://spendgate.test"
        )
        clients.append(client)
        return budget, client

    yield make
    for client in clients:
        await client.aclose()


async def _deduct(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/v1/deduct", json=body, headers=AUTH)


async def test_a_usage_is_priced_by_the_book_and_charged_once(
    serve: Callable[..., Served],
) -> None:
    budget, client = serve()
    version = await budget.publish_pricing(BOOK)
    await budget.add_credits("ada", 10)
    first = await _deduct(client, user_id="ada", usage=USAGE, idempotency_key="k")
    assert first.status_code == 200, first.text
    body = first.json()
    # 1000 x 0.0000025 + 200 x 0.00001 = 0.0045; a search 0.01; 2 queries 0.01
    assert (body["amount"], body["balance_after"]) == ("0.0245", "9.9755")
    assert body["breakdown"] == {  # as priced, unrounded
        "total": "0.0245000",
        "model": "0.0045000",
        "tools": "0.01",
        "search": "0.0100",
        "cache": "0",
        "fixed": "0",
        "tools_by_name": {"web_search": "0.01"},
    }
    assert (body["price_version"], body["allowance_used"]) == (version, "0")
    assert (body["status"], body["replayed"], body["warnings"]) == (
        "charged",
        False,
        [],
    )
    again = await _deduct(client, user_id="ada", usage=USAGE, idempotency_key="k")
    assert again.json()["replayed"] and again.json()["entry_id"] == body["entry_id"]
    assert (await budget.get_balance("ada")).total == Decimal("9.9755")
    other = {**USAGE, "input_tokens": 1}
    conflict = await _deduct(client, user_id="ada", usage=other, idempotency_key="k")
    assert conflict.status_code == 409


async def test_an_amount_with_a_model_project_and_metadata(
    serve: Callable[..., Served],
) -> None:
    budget, client = serve()
    await budget.add_credits("ada", 5)
    answer = await _deduct(
        client,
        user_id="ada",
        amount="1.25",
        model="m1",
        project_id="p1",
        metadata={"job": 7},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["amount"], body["balance_after"], body["breakdown"]) == (
        "1.25",
        "3.75",
        None,
    )
    _, entry = (await budget.redis.xrange(budget.keys.ledger))[-1]
    fields = {k.decode(): v.decode() for k, v in entry.items()}
    assert (fields[FIELD["model"]], fields[FIELD["project_id"]]) == ("m1", "p1")
    assert json.loads(fields[FIELD["metadata"]])["job"] == 7


async def test_refusals_are_429_and_change_nothing(
    serve: Callable[..., Served],
) -> None:
    budget, client = serve(daily_user_limit=3, model_caps=True)
    await budget.add_credits("ada", 2)
    await budget.set_limits("user", "ada", model="m1", daily=1)
    before = await _snapshot(budget)
    short = await _deduct(client, user_id="ada", amount="2.5", idempotency_key="a")
    assert short.status_code == 429
    assert (short.json()["window"], short.json()["limit"]) == ("balance", "2")
    await budget.add_credits("ada", 10)
    before = await _snapshot(budget)
    capped = await _deduct(client, user_id="ada", amount="3.5")
    assert (capped.status_code, capped.json()["window"]) == (429, "daily")
    model = await _deduct(client, user_id="ada", amount="1.5", model="m1")
    assert (model.status_code, model.json()["model"]) == (429, "m1")
    assert await _snapshot(budget) == before
    # the key of the refused call is free: nothing was stored under it
    assert (await _deduct(client, user_id="ada", amount=1, idempotency_key="a")).json()[
        "replayed"
    ] is False


async def test_a_team_deduct_over_http(serve: Callable[..., Served]) -> None:
    budget, client = serve()
    await budget.create_team("eng", initial_balance=5)
    await budget.add_team_member("eng", "ada", daily_cap=3)
    paid = await _deduct(client, user_id="ada", amount=2, team_id="eng")
    assert paid.status_code == 200, paid.text
    assert (paid.json()["team_id"], paid.json()["balance_after"]) == ("eng", "3")
    before = await _snapshot(budget)
    member = await _deduct(client, user_id="ada", amount="1.5", team_id="eng")
    assert (member.status_code, member.json()["scope"]) == (429, "team_member")
    stranger = await _deduct(client, user_id="bob", amount=1, team_id="eng")
    assert stranger.status_code == 403
    nowhere = await _deduct(client, user_id="ada", amount=1, team_id="ops")
    assert nowhere.status_code == 404
    assert await _snapshot(budget) == before


async def test_a_fixed_job(serve: Callable[..., Served]) -> None:
    budget, client = serve()
    await budget.add_credits("ada", 50)
    none = await client.post(
        "/v1/deduct/fixed", json={"user_id": "ada", "job": "batch_job"}, headers=AUTH
    )
    assert none.status_code == 422  # no book is active
    await budget.publish_pricing(BOOK)
    job = await client.post(
        "/v1/deduct/fixed",
        json={"user_id": "ada", "job": "batch_job", "idempotency_key": "j"},
        headers=AUTH,
    )
    assert job.status_code == 200, job.text
    assert (job.json()["amount"], job.json()["balance_after"]) == ("20", "30")
    assert job.json()["breakdown"]["fixed"] == "20"
    unknown = await client.post(
        "/v1/deduct/fixed", json={"user_id": "ada", "job": "nope"}, headers=AUTH
    )
    assert unknown.status_code == 422
    assert (await budget.get_balance("ada")).total == 30


async def test_a_team_fixed_job_over_http(serve: Callable[..., Served]) -> None:
    budget, client = serve()
    await budget.publish_pricing(BOOK)
    await budget.create_team("eng", initial_balance=50)
    await budget.create_team("ops", initial_balance=50)
    await budget.add_team_member("eng", "ada", daily_cap=30)
    await budget.add_team_member("ops", "ada")

    async def fixed(**body: Any) -> httpx.Response:
        job = {"user_id": "ada", "job": "batch_job", **body}
        return await client.post("/v1/deduct/fixed", json=job, headers=AUTH)

    paid = await fixed(team_id="eng", idempotency_key="j")
    assert paid.status_code == 200, paid.text
    body = paid.json()
    paid_by = [body[k] for k in ("amount", "balance_after", "team_id")]
    assert paid_by == ["20", "30", "eng"]
    again = (await fixed(team_id="eng", idempotency_key="j")).json()
    assert again["replayed"] and again["entry_id"] == body["entry_id"]
    assert (again["amount"], again["balance_after"]) == ("20", "30")
    before = await _team_snapshot(budget)
    other = await fixed(team_id="ops", idempotency_key="j")
    assert other.status_code == 409
    member = await fixed(team_id="eng")  # 20 + 20 > the member's cap of 30
    assert (member.status_code, member.json()["scope"]) == (429, "team_member")
    stranger = await fixed(team_id="eng", user_id="bob")
    assert stranger.status_code == 403
    nowhere = await fixed(team_id="dev")
    assert nowhere.status_code == 404
    assert await _team_snapshot(budget) == before
    assert (await budget.get_team("eng")).balance == 30
    assert (await budget.get_team("ops")).balance == 50


async def test_a_replay_answers_the_first_warnings(
    serve: Callable[..., Served],
) -> None:
    budget, client = serve(cap_actions=True)
    await budget.add_credits("ada", 10)
    await budget.set_limits("user", "ada", daily=2, action="warn")
    first = await _deduct(client, user_id="ada", amount="1.7", idempotency_key="w")
    warned = first.json()["warnings"]
    assert [w["threshold"] for w in warned] == ["0.5", "0.8"]
    assert warned[0] == {
        "scope": "user",
        "scope_id": "ada",
        "window": "daily",
        "threshold": "0.5",
        "limit": "2",
        "spent": "1.7",
    }
    again = await _deduct(client, user_id="ada", amount="1.7", idempotency_key="w")
    assert again.json()["replayed"] and again.json()["warnings"] == warned


BAD_BODIES: list[dict[str, Any]] = [
    {"user_id": "ada"},  # neither usage nor amount
    {"user_id": "ada", "amount": 1, "usage": USAGE},  # both
    {"user_id": "ada", "amount": "-1"},
    {"user_id": "ada", "amount": "1e3"},
    {"user_id": "ada", "amount": 1, "surprise": True},
    {"user_id": "", "amount": 1},
    {"user_id": "a\nb", "amount": 1},
    {"user_id": "ada", "amount": 1, "model": " "},
    {"user_id": "ada", "usage": {"input_tokens": -1}},
    {"user_id": "ada", "usage": {"input_tokens": True}},
    {"user_id": "ada", "usage": {"input_tokens": "5"}},
    {"user_id": "ada", "usage": {"input_tokens": 1.5}},
    {"user_id": "ada", "usage": {"input_tokens": 2**63}},
    {"user_id": "ada", "usage": {"tokens": 1}},
    {"user_id": "ada", "usage": {"tool_calls": ["web_search"]}},
    {"user_id": "ada", "usage": {"tool_calls": [{"name": ""}]}},
    {"user_id": "ada", "usage": {"tool_calls": [{"name": "x" * 257}]}},
    {"user_id": "ada", "usage": {"tool_calls": [{"name": "t"}] * (MAX_TOOL_CALLS + 1)}},
    {"user_id": "ada", "usage": {"model": "gpt-4o"}, "model": "other"},
    {"user_id": "ada", "amount": 1, "metadata": "not an object"},
]


@pytest.mark.parametrize("body", BAD_BODIES)
async def test_malformed_bodies_are_422_and_change_nothing(
    serve: Callable[..., Served], body: dict[str, Any]
) -> None:
    budget, client = serve()
    await budget.publish_pricing(BOOK)
    await budget.add_credits("ada", 10)
    before = await _snapshot(budget)
    answer = await client.post("/v1/deduct", json=body, headers=AUTH)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"]
    assert await _snapshot(budget) == before


async def test_oversized_and_unauthenticated_bodies_change_nothing(
    serve: Callable[..., Served],
) -> None:
    budget, client = serve()
    await budget.add_credits("ada", 10)
    before = await _snapshot(budget)
    big = {"user_id": "ada", "amount": 1, "metadata": {"x": "y" * 70_000}}
    assert (await client.post("/v1/deduct", json=big, headers=AUTH)).status_code == 413
    fair = {"user_id": "ada", "amount": 1}
    assert (await client.post("/v1/deduct", json=fair)).status_code == 401
    assert (await client.post("/v1/deduct/fixed", json=fair)).status_code == 401
    assert await _snapshot(budget) == before
