"""The HTTP routes of plans and features, in process (``httpx.ASGITransport``),
on both backends, with the budget's fake clock.

Plans are defined with ``PUT /v1/plans/{id}`` and read back; a user is put on
a plan and read back with the cycle's dates; features are checked and used,
with 429 and ``Retry-After`` at a ``deny`` limit and 403 for a feature the
plan lacks; every route needs the API key; bad input is a 422 that changes
nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest

from conftest import FakeClock, MakeBudget
from plan_helpers import BURSAR_BOOK_WITH_PLANS, snapshot
from spendgate import BudgetManager
from spendgate.server import create_app

KEY = "test-key-1"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
async def budget(make_budget: MakeBudget) -> BudgetManager:
    return make_budget()


@pytest.fixture
async def client(
    budget: BudgetManager, clock: FakeClock
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(budget, api_keys=[KEY], clock=clock)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://spendgate.test"
    ) as http:
        yield http


PRO = {
    "name": "Pro",
    "free_allowance": "500.5",
    "rate_overrides": {"_default": "input_tokens * 0.001"},
    "features": {"image_gen": True, "seats": 3},
    "feature_limits": {"image_gen": {"max_calls": 2, "action": "deny"}},
}


async def test_a_plan_is_put_and_read_back(client: httpx.AsyncClient) -> None:
    put = await client.put("/v1/plans/pro", json=PRO, headers=AUTH)
    assert put.status_code == 200, put.text
    body = put.json()
    assert body == {
        "plan_id": "pro",
        "name": "Pro",
        "free_allowance": "500.5",
        "period": "monthly",
        "rate_overrides": {"_default": "input_tokens * 0.001"},
        "features": {"image_gen": True, "seats": 3},
        "feature_limits": {
            "image_gen": {"max_calls": 2, "period": "monthly", "action": "deny"}
        },
        "source": "set_plan",
    }
    got = await client.get("/v1/plans/pro", headers=AUTH)
    assert got.json() == body
    listed = await client.get("/v1/plans", headers=AUTH)
    assert listed.json() == {"plans": [body]}
    missing = await client.get("/v1/plans/gold", headers=AUTH)
    assert missing.status_code == 404


async def test_a_books_plans_are_listed(
    client: httpx.AsyncClient, budget: BudgetManager
) -> None:
    await budget.publish_pricing(BURSAR_BOOK_WITH_PLANS)
    listed = (await client.get("/v1/plans", headers=AUTH)).json()["plans"]
    assert [(p["plan_id"], p["source"]) for p in listed] == [
        ("free", "price_book"),
        ("pro", "price_book"),
    ]
    assert listed[0]["free_allowance"] == "50000"


async def test_a_plan_with_a_limit_above_the_puts_bound_is_still_listed(
    client: httpx.AsyncClient, budget: BudgetManager
) -> None:
    # A plan set from Python (or a book, or the CLI) may allow more calls
    # than a PUT takes (2**53): reading it must not fail the whole listing.
    many = 2**60
    await budget.set_plan("bulk", feature_limits={"ocr": {"max_calls": many}})
    listed = await client.get("/v1/plans", headers=AUTH)
    assert listed.status_code == 200, listed.text
    (plan,) = listed.json()["plans"]
    assert plan["feature_limits"]["ocr"]["max_calls"] == many
    one = await client.get("/v1/plans/bulk", headers=AUTH)
    assert one.status_code == 200 and one.json() == plan


async def test_a_user_is_put_on_a_plan_and_read_back(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    await client.put("/v1/plans/pro", json=PRO, headers=AUTH)
    empty = await client.get("/v1/users/team/ada/plan", headers=AUTH)
    assert empty.status_code == 200
    assert empty.json()["user_id"] == "team/ada" and empty.json()["plan_id"] is None
    clock.set(datetime(2025, 1, 31, 12, tzinfo=UTC))
    put = await client.put(
        "/v1/users/team/ada/plan", json={"plan_id": "pro"}, headers=AUTH
    )
    assert put.status_code == 200, put.text
    body = (await client.get("/v1/users/team/ada/plan", headers=AUTH)).json()
    assert body["plan_id"] == "pro" and body["name"] == "Pro"
    assert body["allowance"] == body["allowance_remaining"] == "500.5"
    assert body["period_start"] == body["assigned_at"] == "2025-01-31T12:00:00+00:00"
    assert body["resets_at"] == "2025-02-28T12:00:00+00:00"
    unknown = await client.put(
        "/v1/users/team/ada/plan", json={"plan_id": "gold"}, headers=AUTH
    )
    assert unknown.status_code == 422
    gone = await client.delete("/v1/users/team/ada/plan", headers=AUTH)
    assert gone.json() == {"user_id": "team/ada", "removed": True}
    again = await client.delete("/v1/users/team/ada/plan", headers=AUTH)
    assert again.json()["removed"] is False


async def test_features_are_checked_and_used(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    clock.set(datetime(2025, 6, 30, 23, 59, 30, tzinfo=UTC))
    await client.put("/v1/plans/pro", json=PRO, headers=AUTH)
    await client.put("/v1/users/ada/plan", json={"plan_id": "pro"}, headers=AUTH)
    check = (await client.get("/v1/users/ada/features/seats", headers=AUTH)).json()
    assert check["has_feature"] is True and check["value"] == 3
    assert check["limit"] is None
    url = "/v1/users/ada/features/image_gen/use"
    first = await client.post(url, headers=AUTH)  # no body: no key
    assert first.status_code == 200, first.text
    assert first.json()["used"] == 1 and first.json()["remaining"] == 1
    keyed = await client.post(url, json={"idempotency_key": "k1"}, headers=AUTH)
    replay = await client.post(url, json={"idempotency_key": "k1"}, headers=AUTH)
    assert keyed.json()["used"] == replay.json()["used"] == 2
    assert replay.json()["replayed"] is True
    refused = await client.post(url, headers=AUTH)
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "30"  # the month ends in 30 s
    refusal = refused.json()
    assert refusal["status"] == "refused" and "limit reached" in refusal["detail"]
    assert (refusal["scope"], refusal["scope_id"], refusal["window"]) == (
        "user",
        "ada",
        "monthly",
    )
    assert (refusal["limit"], refusal["spent"]) == ("2", "2")
    lacking = await client.post("/v1/users/ada/features/video/use", headers=AUTH)
    assert lacking.status_code == 403
    check = (await client.get("/v1/users/ada/features/image_gen", headers=AUTH)).json()
    assert check["used"] == 2 and check["remaining"] == 0
    assert check["resets_at"] == "2025-07-01T00:00:00+00:00"


async def test_a_plan_id_and_a_feature_with_a_slash_are_reachable(
    client: httpx.AsyncClient, budget: BudgetManager
) -> None:
    # Ids are opaque strings: "acme/pro" is a plan id set_plan, the CLI and a
    # book take, and the path's pattern allows it, so its routes serve it
    # (as the users' do theirs), written out or with the slash escaped.
    body = {
        "features": {"image/gen": True},
        "feature_limits": {"image/gen": {"max_calls": 1}},
    }
    put = await client.put("/v1/plans/acme/pro", json=body, headers=AUTH)
    assert put.status_code == 200, put.text
    assert put.json()["plan_id"] == "acme/pro"
    for url in ("/v1/plans/acme/pro", "/v1/plans/acme%2Fpro"):
        got = await client.get(url, headers=AUTH)
        assert got.status_code == 200 and got.json()["plan_id"] == "acme/pro"
    await budget.assign_plan("ada", "acme/pro")
    check = await client.get("/v1/users/ada/features/image/gen", headers=AUTH)
    assert check.status_code == 200, check.text
    assert (check.json()["feature"], check.json()["has_feature"]) == ("image/gen", True)
    used = await client.post("/v1/users/ada/features/image%2Fgen/use", headers=AUTH)
    assert used.status_code == 200 and used.json()["used"] == 1
    again = await client.post("/v1/users/ada/features/image/gen/use", headers=AUTH)
    assert again.status_code == 429


@pytest.mark.parametrize(
    ("method", "url", "body"),
    [
        ("GET", "/v1/plans", None),
        ("GET", "/v1/plans/pro", None),
        ("PUT", "/v1/plans/pro", PRO),
        ("GET", "/v1/users/ada/plan", None),
        ("PUT", "/v1/users/ada/plan", {"plan_id": "pro"}),
        ("DELETE", "/v1/users/ada/plan", None),
        ("GET", "/v1/users/ada/features/f", None),
        ("POST", "/v1/users/ada/features/f/use", None),
    ],
)
async def test_every_plan_route_needs_the_key(
    client: httpx.AsyncClient, method: str, url: str, body: object
) -> None:
    response = await client.request(method, url, json=body)
    assert response.status_code == 401


@pytest.mark.parametrize(
    "body",
    [
        {"free_allowance": -1},
        {"free_allowance": "1e3"},
        {"period": "hourly"},
        {"rate_overrides": {"_default": "open('x')"}},
        {"feature_limits": {"f": {"max_calls": -1}}},
        {"feature_limits": {"f": {"max_calls": 1, "action": "boom"}}},
        {"features": "yes"},
        {"surprise": 1},
    ],
)
async def test_a_bad_plan_is_a_422_that_changes_nothing(
    client: httpx.AsyncClient, budget: BudgetManager, body: dict[str, object]
) -> None:
    await client.put("/v1/plans/pro", json=PRO, headers=AUTH)
    before = await snapshot(budget)
    response = await client.put("/v1/plans/pro", json=body, headers=AUTH)
    assert response.status_code == 422, response.text
    bad_path = await client.put("/v1/plans/%01x", json=PRO, headers=AUTH)
    assert bad_path.status_code == 422
    assert await snapshot(budget) == before
