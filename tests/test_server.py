"""The HTTP server, in process: endpoints, auth, refusals, errors, metrics.

Each test builds the app over a budget from the conftest ``make_budget``
fixture, so it runs on the real Redis and on the embedded fakeredis, and
talks to it through ``httpx.ASGITransport`` (no socket). The app shares the
budget's fake clock, so ``Retry-After`` is checked to the second. Outages use
a budget pointed at a port nothing listens on. A schemathesis run over the
OpenAPI document (bounded: a few dozen examples per operation and mode)
checks that no generated input, valid or not, gets a 5xx.
"""

from __future__ import annotations

import asyncio
import collections
import json
import socket
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import FakeClock, MakeBudget, service_missing
from redis_server import RedisServer, redis_server_binary
from spendgate import BudgetConfig, BudgetManager, ConfigurationError
from spendgate.server import BALANCE_RETRY_AFTER_SECONDS, create_app

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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- health and auth -----------------------------------------------------------


async def test_health_needs_no_key(make_client: MakeClient) -> None:
    client = make_client()
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "healthy", "redis": "connected"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": KEY},
        {"Authorization": f"Bearer {KEY}x"},
        {"X-User-Id": "alice"},
    ],
    ids=["none", "wrong", "basic", "no-scheme", "prefix", "unsigned-header"],
)
async def test_every_endpoint_but_health_needs_a_key(
    make_client: MakeClient, headers: dict[str, str]
) -> None:
    client = make_client()
    calls = [
        ("POST", "/check", {"user_id": "u"}),
        ("POST", "/spend", {"user_id": "u", "cost": 1}),
        ("POST", "/v1/reserve", {"user_id": "u", "amount": 1}),
        ("POST", "/v1/settle", {"lease_id": "x", "actual_cost": 1}),
        ("POST", "/v1/release", {"lease_id": "x"}),
        ("POST", "/v1/credits", {"user_id": "u", "amount": 1}),
        ("GET", "/v1/usage/u", None),
        ("GET", "/v1/limits/user/u", None),
        ("PUT", "/v1/limits/user/u", {"daily": 1}),
        ("DELETE", "/v1/limits/user/u", None),
        ("GET", "/metrics", None),
        ("GET", "/openapi.json", None),
    ]
    for method, url, body in calls:
        response = await client.request(method, url, json=body, headers=headers)
        assert response.status_code == 401, (method, url)
        assert response.headers["www-authenticate"] == "Bearer"
    usage = await client.get("/v1/usage/u", headers=AUTH)
    assert usage.json()["scopes"]["user"]["daily"]["spent"] == "0"  # nothing happened


async def test_any_configured_key_is_accepted(make_client: MakeClient) -> None:
    client = make_client()
    for key in (KEY, "other-key"):
        headers = {"Authorization": f"Bearer {key}"}
        response = await client.post("/check", json={"user_id": "u"}, headers=headers)
        assert response.status_code == 200


async def test_no_keys_refuses_to_start_unless_insecure(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget()
    with pytest.raises(ConfigurationError, match="SPENDGATE_API_KEYS"):
        create_app(budget)
    with pytest.raises(ConfigurationError):
        create_app(budget, api_keys=["", ""])
    app = create_app(budget, insecure_no_auth=True)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        response = await client.post("/check", json={"user_id": "u"})
    assert response.status_code == 200


def test_keys_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPENDGATE_API_KEYS", " k1 ,k2,")
    config = BudgetConfig()
    assert config.api_key_list() == ["k1", "k2"]
    assert "k1" not in repr(config)
    assert "k1" not in json.dumps(config.describe())
    create_app(config)  # does not raise: keys are configured


def test_invalid_environment_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPENDGATE_API_KEYS", "k1")
    monkeypatch.setenv("SPENDGATE_DAILY_USER_LIMIT", "-5")
    with pytest.raises(ConfigurationError, match="daily_user_limit"):
        create_app()


# -- coreason-compatible: /check and /spend ------------------------------------


async def test_check_allowed_reports_the_smallest_remaining(
    make_client: MakeClient,
) -> None:
    client = make_client(daily_user_limit=10, daily_project_limit="2.5")
    response = await client.post(
        "/check",
        json={"user_id": "u", "project_id": "p", "estimated_cost": 0.5},
        headers=AUTH,
    )
    assert response.status_code == 200
    assert response.json() == {
        "status": "allowed",
        "user_id": "u",
        "project_id": "p",
        "remaining": "2.5",
    }


async def test_check_without_caps_has_no_remaining(make_client: MakeClient) -> None:
    client = make_client()
    response = await client.post("/check", json={"user_id": "u"}, headers=AUTH)
    assert response.json()["remaining"] is None


async def test_refusal_is_429_with_retry_after_and_the_reason(
    make_client: MakeClient,
) -> None:
    # The clock stands at 2026-03-15 12:00 UTC: the day resets in 12 hours.
    client = make_client(daily_user_limit=1)
    spent = await client.post(
        "/spend", json={"user_id": "u", "cost": "0.75"}, headers=AUTH
    )
    assert spent.status_code == 200
    response = await client.post(
        "/check", json={"user_id": "u", "estimated_cost": "0.5"}, headers=AUTH
    )
    assert response.status_code == 429
    assert response.headers["retry-after"] == str(12 * 3600)
    body = response.json()
    assert body["status"] == "refused"
    assert body["scope"] == "user"
    assert body["scope_id"] == "u"
    assert body["window"] == "daily"
    assert Decimal(body["limit"]) == 1
    assert Decimal(body["spent"]) == Decimal("0.75")
    assert Decimal(body["held"]) == 0
    assert Decimal(body["requested"]) == Decimal("0.5")
    assert body["resets_at"] == "2026-03-16T00:00:00+00:00"
    assert body["retry_after_seconds"] == 12 * 3600
    assert "User daily limit exceeded for 'u'" in body["detail"]


async def test_monthly_refusal_retries_after_the_month(
    make_client: MakeClient,
) -> None:
    client = make_client(monthly_project_limit=2)
    await client.post(
        "/spend", json={"user_id": "u", "project_id": "p", "cost": 2}, headers=AUTH
    )
    response = await client.post(
        "/check", json={"user_id": "v", "project_id": "p"}, headers=AUTH
    )
    assert response.status_code == 429
    body = response.json()
    assert (body["scope"], body["scope_id"], body["window"]) == (
        "project",
        "p",
        "monthly",
    )
    assert body["resets_at"] == "2026-04-01T00:00:00+00:00"
    # 16.5 days from 2026-03-15 12:00 to 2026-04-01 00:00
    assert response.headers["retry-after"] == str(16 * 86400 + 12 * 3600)


async def test_balance_refusal_has_a_fixed_retry_after(make_client: MakeClient) -> None:
    client = make_client(enforce_balance=True)
    await client.post("/v1/credits", json={"user_id": "u", "amount": 1}, headers=AUTH)
    response = await client.post(
        "/check", json={"user_id": "u", "estimated_cost": 2}, headers=AUTH
    )
    assert response.status_code == 429
    body = response.json()
    assert body["window"] == "balance"
    assert body["resets_at"] is None
    assert response.headers["retry-after"] == str(BALANCE_RETRY_AFTER_SECONDS)


async def test_spend_records_and_replays_by_idempotency_key(
    make_client: MakeClient,
) -> None:
    client = make_client(daily_user_limit=1)
    body = {
        "user_id": "u",
        "cost": 2,
        "project_id": "p",
        "model": "gpt-4o",
        "idempotency_key": "req-1",
        "metadata": {"route": "/chat", "tokens": 1200},
    }
    first = await client.post("/spend", json=body, headers=AUTH)
    # A fact is never refused for a limit: 2 is recorded over a cap of 1.
    assert first.status_code == 200
    data = first.json()
    assert data["status"] == "recorded"
    assert data["replayed"] is False
    assert data["spooled"] is False
    assert data["amount"] == "2"
    assert (data["user_id"], data["project_id"], data["model"]) == ("u", "p", "gpt-4o")
    again = await client.post("/spend", json=body, headers=AUTH)
    assert again.status_code == 200
    assert again.json()["entry_id"] == data["entry_id"]
    assert again.json()["replayed"] is True
    usage = await client.get("/v1/usage/u", headers=AUTH)
    assert usage.json()["scopes"]["user"]["daily"]["spent"] == "2"  # charged once
    conflict = await client.post("/spend", json={**body, "cost": 3}, headers=AUTH)
    assert conflict.status_code == 409
    assert "req-1" in conflict.json()["detail"]


async def test_json_numbers_are_read_exactly(make_client: MakeClient) -> None:
    client = make_client()
    # As a float this is 1.0; read exactly it is just above 1 and, charges
    # rounding up to the micro-unit, costs 1.000001.
    raw = b'{"user_id": "u", "cost": 1.0000000000000000001}'
    response = await client.post(
        "/spend", content=raw, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.json()["amount"] == "1.000001"
    for cost in (0.1, 0.2):
        await client.post("/spend", json={"user_id": "u", "cost": cost}, headers=AUTH)
    # 1e-7 as a JSON number: a string amount is plain decimal digits only
    await client.post("/spend", json={"user_id": "u", "cost": 1e-7}, headers=AUTH)
    usage = await client.get("/v1/usage/u", headers=AUTH)
    assert usage.json()["scopes"]["user"]["daily"]["spent"] == "1.300002"


# -- leases --------------------------------------------------------------------


async def test_lease_cycle(make_client: MakeClient) -> None:
    client = make_client(daily_user_limit=10)
    reserved = await client.post(
        "/v1/reserve",
        json={"user_id": "u", "amount": "4", "project_id": "p", "ttl_seconds": 60},
        headers=AUTH,
    )
    assert reserved.status_code == 200
    lease = reserved.json()
    assert lease["amount"] == "4"
    assert lease["expires_at"] == "2026-03-15T12:01:00+00:00"
    assert lease["replayed"] is False
    usage = (await client.get("/v1/usage/u?project_id=p", headers=AUTH)).json()
    assert usage["scopes"]["user"]["held"] == "4"
    assert usage["scopes"]["project"]["daily"]["held"] == "4"
    # The hold counts: 7 more would pass the cap of 10.
    refused = await client.post(
        "/v1/reserve", json={"user_id": "u", "amount": 7}, headers=AUTH
    )
    assert refused.status_code == 429
    assert refused.json()["held"] == "4"

    settled = await client.post(
        "/v1/settle",
        json={"lease_id": lease["lease_id"], "actual_cost": "3.5", "model": "m"},
        headers=AUTH,
    )
    assert settled.status_code == 200
    record = settled.json()
    assert record["status"] == "settled"
    assert (record["amount"], record["estimate"]) == ("3.5", "4")
    assert (record["late"], record["replayed"]) == (False, False)
    assert (record["user_id"], record["project_id"]) == ("u", "p")
    again = await client.post(
        "/v1/settle",
        json={"lease_id": lease["lease_id"], "actual_cost": "3.5", "model": "m"},
        headers=AUTH,
    )
    assert again.json()["entry_id"] == record["entry_id"]
    assert again.json()["replayed"] is True
    other_cost = await client.post(
        "/v1/settle",
        json={"lease_id": lease["lease_id"], "actual_cost": "1"},
        headers=AUTH,
    )
    assert other_cost.status_code == 409
    release = await client.post(
        "/v1/release", json={"lease_id": lease["lease_id"]}, headers=AUTH
    )
    assert release.status_code == 409
    assert "settled" in release.json()["detail"]
    usage = (await client.get("/v1/usage/u", headers=AUTH)).json()
    assert usage["scopes"]["user"]["daily"]["spent"] == "3.5"
    assert usage["scopes"]["user"]["held"] == "0"


async def test_release_then_settle_is_409(make_client: MakeClient) -> None:
    client = make_client()
    lease = (
        await client.post(
            "/v1/reserve",
            json={"user_id": "u", "amount": 1, "idempotency_key": "r1"},
            headers=AUTH,
        )
    ).json()
    replay = await client.post(
        "/v1/reserve",
        json={"user_id": "u", "amount": 1, "idempotency_key": "r1"},
        headers=AUTH,
    )
    assert replay.json()["lease_id"] == lease["lease_id"]
    assert replay.json()["replayed"] is True
    released = await client.post(
        "/v1/release", json={"lease_id": lease["lease_id"]}, headers=AUTH
    )
    assert released.json() == {
        "status": "released",
        "lease_id": lease["lease_id"],
        "released": True,
    }
    twice = await client.post(
        "/v1/release", json={"lease_id": lease["lease_id"]}, headers=AUTH
    )
    assert twice.status_code == 200
    assert twice.json()["released"] is False
    settle = await client.post(
        "/v1/settle",
        json={"lease_id": lease["lease_id"], "actual_cost": 1},
        headers=AUTH,
    )
    assert settle.status_code == 409
    assert "released" in settle.json()["detail"]
    unknown = await client.post("/v1/release", json={"lease_id": "nope"}, headers=AUTH)
    assert unknown.status_code == 409


# -- operators: usage, credits, limits -----------------------------------------


async def test_usage_reports_every_scope(make_client: MakeClient) -> None:
    client = make_client(daily_user_limit=10, monthly_global_limit=100)
    await client.post(
        "/spend", json={"user_id": "u", "project_id": "p", "cost": "1.25"}, headers=AUTH
    )
    body = (await client.get("/v1/usage/u?project_id=p", headers=AUTH)).json()
    assert body["user_id"] == "u"
    assert body["project_id"] == "p"
    assert body["unit"] == "USD"
    assert set(body["scopes"]) == {"user", "project", "global"}
    user = body["scopes"]["user"]
    assert user["daily"] == {
        "spent": "1.25",
        "held": "0",
        "limit": "10",
        "remaining": "8.75",
        "resets_at": "2026-03-16T00:00:00+00:00",
    }
    assert user["monthly"]["limit"] is None
    assert body["scopes"]["global"]["monthly"]["remaining"] == "98.75"
    assert body["scopes"]["global"]["scope_id"] is None
    without = (await client.get("/v1/usage/u", headers=AUTH)).json()
    assert set(without["scopes"]) == {"user", "global"}


async def test_ids_with_slashes_reach_their_own_entity(make_client: MakeClient) -> None:
    client = make_client()
    await client.post("/spend", json={"user_id": "team/a", "cost": 1}, headers=AUTH)
    body = (await client.get("/v1/usage/team/a", headers=AUTH)).json()
    assert body["user_id"] == "team/a"
    assert body["scopes"]["user"]["daily"]["spent"] == "1"
    other = (await client.get("/v1/usage/team", headers=AUTH)).json()
    assert other["scopes"]["user"]["daily"]["spent"] == "0"


async def test_credits_add_to_the_balance(make_client: MakeClient) -> None:
    client = make_client(enforce_balance=True)
    body = {"user_id": "u", "amount": "5.0000009", "idempotency_key": "topup-1"}
    first = await client.post("/v1/credits", json=body, headers=AUTH)
    assert first.status_code == 200
    data = first.json()
    # Credits round down to the micro-unit.
    assert (data["status"], data["amount"], data["balance"]) == ("credited", "5", "5")
    again = await client.post("/v1/credits", json=body, headers=AUTH)
    assert again.json()["replayed"] is True
    assert again.json()["balance"] == "5"
    conflict = await client.post(
        "/v1/credits", json={**body, "amount": 6}, headers=AUTH
    )
    assert conflict.status_code == 409
    usage = (await client.get("/v1/usage/u", headers=AUTH)).json()
    assert usage["scopes"]["user"]["balance"] == "5"


async def test_limits_get_put_delete(make_client: MakeClient) -> None:
    client = make_client(daily_user_limit=10)
    got = await client.get("/v1/limits/user/u", headers=AUTH)
    assert got.json() == {
        "scope": "user",
        "scope_id": "u",
        "daily": "10",
        "monthly": None,
        "weekly": None,
        "per_minute": None,
        "overridden": [],
        "model": None,  # (the scope's own caps, not a model's)
        "action": None,
        "thresholds": [],
    }
    put = await client.put("/v1/limits/user/u", json={"daily": "0.5"}, headers=AUTH)
    assert put.json()["daily"] == "0.5"
    assert put.json()["overridden"] == ["daily"]
    # Effective on the next call.
    refused = await client.post(
        "/check", json={"user_id": "u", "estimated_cost": 1}, headers=AUTH
    )
    assert refused.status_code == 429
    assert refused.json()["limit"] == "0.5"
    # A field left out keeps its value; null removes the cap.
    put = await client.put("/v1/limits/user/u", json={"monthly": 7}, headers=AUTH)
    assert (put.json()["daily"], put.json()["monthly"]) == ("0.5", "7")
    put = await client.put("/v1/limits/user/u", json={"daily": None}, headers=AUTH)
    assert put.json()["daily"] is None
    assert put.json()["overridden"] == ["daily", "monthly"]
    cleared = await client.delete("/v1/limits/user/u", headers=AUTH)
    assert cleared.json()["daily"] == "10"
    assert cleared.json()["overridden"] == []
    glob = await client.put("/v1/limits/global/-", json={"daily": 100}, headers=AUTH)
    assert glob.json()["scope"] == "global"
    assert glob.json()["scope_id"] is None
    assert glob.json()["daily"] == "100"
    bad = await client.get("/v1/limits/team/u", headers=AUTH)
    assert bad.status_code == 422


async def test_what_a_sharded_deployment_cannot_decide_is_the_clients_422(
    make_client: MakeClient,
) -> None:
    client = make_client(cluster_buckets=8, weekly_caps=True)
    weekly = await client.put("/v1/limits/project/p", json={"weekly": 1}, headers=AUTH)
    assert weekly.status_code == 422  # (a valid request, not a server fault)
    assert "cluster_buckets=8" in weekly.text
    team = await client.post(
        "/v1/teams", json={"team_id": "eng", "name": "Eng"}, headers=AUTH
    )
    assert team.status_code == 422
    assert "cluster_buckets=8" in team.text
    daily = await client.put("/v1/limits/project/p", json={"daily": 1}, headers=AUTH)
    assert daily.status_code == 200  # (lent to the buckets: escrow)


# -- bad input: 422 and 413, never a 5xx ---------------------------------------


@pytest.mark.parametrize(
    ("url", "raw", "fragment"),
    [
        ("/check", b"", "empty"),
        ("/check", b"   ", "empty"),
        ("/check", b"{", "not valid JSON"),
        ("/check", b"\xff\xfe{", "not valid JSON"),
        ("/check", b"[1, 2]", "object"),
        ("/check", b'"u"', "object"),
        ("/check", b"null", "object"),
        ("/check", b'{"user_id": "u", "estimated_cost": NaN}', "NaN"),
        ("/check", b'{"user_id": "u", "estimated_cost": Infinity}', "Infinity"),
        ("/check", b'{"user_id": "u", "estimated_cost": -1}', "negative"),
        ("/check", b'{"user_id": "u", "estimated_cost": "-1"}', "negative"),
        ("/check", b'{"user_id": "u", "estimated_cost": true}', "bool"),
        ("/check", b'{"user_id": "u", "estimated_cost": "abc"}', "not a number"),
        ("/check", b'{"user_id": "u", "estimated_cost": null}', "estimated_cost"),
        ("/check", b'{"user_id": "u", "estimated_cost": 1e400}', "maximum"),
        ("/check", b'{"user_id": "u", "estimated_cost": [1]}', "estimated_cost"),
        ("/check", b'{"user_id": 42}', "user_id"),
        ("/check", b'{"user_id": ""}', "user_id"),
        ("/check", b'{"user_id": "  "}', "blank"),
        ("/check", b'{"user_id": "u", "estimate": 1}', "estimate"),
        ("/check", b'{"project_id": "p"}', "user_id"),
        ("/check", b'{"user_id": "\\ud800"}', "valid string"),
        ("/check", b'{"user_id": "' + b"x" * 600 + b'"}', "above the limit"),
        ("/check", b"[" * 100_00 + b"]" * 100_00, "not valid JSON"),
        ("/spend", b'{"user_id": "u"}', "cost"),
        ("/spend", b'{"user_id": "u", "cost": 1, "metadata": [1]}', "metadata"),
        ("/spend", b'{"user_id": "u", "cost": 1, "model": ""}', "model"),
        ("/spend", b'{"user_id": "u", "cost": 1, "idempotency_key": 5}', "idempotency"),
        ("/v1/reserve", b'{"user_id": "u", "amount": 1, "ttl_seconds": 1.5}', "ttl"),
        ("/v1/reserve", b'{"user_id": "u", "amount": 1, "ttl_seconds": 0}', "ttl"),
        ("/v1/reserve", b'{"user_id": "u", "amount": 1, "ttl_seconds": true}', "ttl"),
        ("/v1/settle", b'{"lease_id": "x"}', "actual_cost"),
        ("/v1/release", b"{}", "lease_id"),
        ("/v1/credits", b'{"user_id": "u", "amount": "1e10"}', "maximum"),
    ],
)
async def test_bad_input_is_422_with_a_clear_message(
    make_client: MakeClient, url: str, raw: bytes, fragment: str
) -> None:
    client = make_client()
    response = await client.post(
        url, content=raw, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert fragment.lower() in detail.lower(), detail


async def test_metadata_over_the_limit_is_422(make_client: MakeClient) -> None:
    client = make_client(max_metadata_bytes=64)
    response = await client.post(
        "/spend",
        json={"user_id": "u", "cost": 1, "metadata": {"note": "x" * 100}},
        headers=AUTH,
    )
    assert response.status_code == 422
    assert "metadata" in response.json()["detail"]


async def test_field_errors_say_where(make_client: MakeClient) -> None:
    client = make_client()
    response = await client.post(
        "/spend", json={"user_id": 1, "cost": "x", "extra": 1}, headers=AUTH
    )
    assert response.status_code == 422
    locations = {tuple(e["loc"]) for e in response.json()["errors"]}
    assert locations == {("user_id",), ("cost",), ("extra",)}


async def test_bodies_over_the_limit_are_413(make_client: MakeClient) -> None:
    client = make_client(app_options={"max_body_bytes": 1024})
    big = {"user_id": "u", "cost": 1, "metadata": {"pad": "x" * 2000}}
    response = await client.post("/spend", json=big, headers=AUTH)
    assert response.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:
        # No Content-Length: the limit is enforced while the body streams in.
        yield b'{"user_id": "u", "cost": 1, "metadata": {"pad": "'
        for _ in range(10):
            yield b"x" * 200
        yield b'"}}'

    streamed = await client.post("/spend", content=chunks(), headers=AUTH)
    assert streamed.status_code == 413
    usage = await client.get("/v1/usage/u", headers=AUTH)
    assert usage.json()["scopes"]["user"]["daily"]["spent"] == "0"
    small = await client.post("/spend", json={"user_id": "u", "cost": 1}, headers=AUTH)
    assert small.status_code == 200


async def test_unknown_routes_and_methods_are_4xx(make_client: MakeClient) -> None:
    client = make_client()
    assert (await client.get("/nope", headers=AUTH)).status_code == 404
    assert (await client.get("/check", headers=AUTH)).status_code == 405
    assert (await client.get("/docs")).status_code == 404


# -- the store is down: admission fails closed, never a 500 --------------------


def _dead_budget(tmp_path: Path, **settings: Any) -> BudgetManager:
    config = BudgetConfig(
        redis_url=f"redis://127.0.0.1:{_free_port()}/0",
        key_prefix="dead",
        spool_path=tmp_path / "spool",
        **settings,
    )
    return BudgetManager(config)


async def test_redis_down_fails_closed_with_503(tmp_path: Path) -> None:
    budget = _dead_budget(tmp_path)
    app = create_app(budget, api_keys=[KEY])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        health = await client.get("/health")
        assert health.status_code == 503
        assert health.json() == {
            "status": "unhealthy",
            "redis": "disconnected",
            # coreason-budget's wording: its callers match on it
            "detail": "Redis connection failed",
        }
        document = (await client.get("/openapi.json", headers=AUTH)).json()
        documented = document["paths"]["/health"]["get"]["responses"]["503"]
        ref = documented["content"]["application/json"]["schema"]["$ref"]
        schema = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
        assert set(schema["required"]) == set(health.json())
        for url, body in [
            ("/check", {"user_id": "u"}),
            ("/v1/reserve", {"user_id": "u", "amount": 1}),
        ]:
            response = await client.post(url, json=body, headers=AUTH)
            assert response.status_code == 503, url
            assert response.headers["retry-after"] == "1"
            assert "unavailable" in response.json()["detail"]
        for method, url, body in [
            ("GET", "/v1/usage/u", None),
            ("GET", "/v1/limits/user/u", None),
            ("POST", "/v1/release", {"lease_id": "x"}),
        ]:
            response = await client.request(method, url, json=body, headers=AUTH)
            assert response.status_code == 503, url
        metrics = await client.get("/metrics", headers=AUTH)
        assert metrics.status_code == 200
        assert 'spendgate_redis_errors_total{kind="unavailable"}' in metrics.text
        assert (
            'spendgate_decisions_total{endpoint="check",outcome="unavailable",'
            'scope="none",window="none"} 1.0' in metrics.text
        )
    await budget.aclose()


async def test_redis_down_facts_are_spooled(tmp_path: Path) -> None:
    """Facts are still accepted while Redis is down: 200 with ``spooled: true``
    (appended and fsynced to the local spool, replayed when Redis returns),
    and the spool's depth shows in the metrics."""
    budget = _dead_budget(tmp_path)
    app = create_app(budget, api_keys=[KEY])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        spent = await client.post(
            "/spend",
            json={"user_id": "u", "cost": "0.5", "idempotency_key": "k1"},
            headers=AUTH,
        )
        assert spent.status_code == 200, spent.text
        assert spent.json()["status"] == "recorded"
        assert spent.json()["spooled"] is True
        assert spent.json()["amount"] == "0.5"
        credited = await client.post(
            "/v1/credits", json={"user_id": "u", "amount": 2}, headers=AUTH
        )
        assert credited.status_code == 200, credited.text
        assert credited.json()["spooled"] is True
        # Admission still fails closed meanwhile.
        check = await client.post("/check", json={"user_id": "u"}, headers=AUTH)
        assert check.status_code == 503
        text = (await client.get("/metrics", headers=AUTH)).text
        assert "spendgate_spool_depth_entries 2.0" in text
        assert "spendgate_spool_quarantined 0.0" in text
        assert 'spendgate_facts_total{endpoint="spend",outcome="spooled"} 1.0' in text
        # A record that cannot be read is counted once it is quarantined.
        assert budget.spool is not None
        budget.spool._records.quarantined = 3
        text = (await client.get("/metrics", headers=AUTH)).text
        assert "spendgate_spool_quarantined 3.0" in text
    await budget.aclose()


@pytest.mark.slow
async def test_outage_and_recovery_end_to_end(tmp_path: Path) -> None:
    """A private redis-server is killed mid-traffic and restarted: meanwhile
    admission is 503 and facts are 200 spooled; afterwards the spooled facts
    are in Redis exactly once, and a retried spend replays, not recharges."""
    if redis_server_binary() is None:
        service_missing("redis-server", "not installed (this test runs its own)")
    server = RedisServer(tmp_path / "redis")
    server.start()
    budget = BudgetManager(
        BudgetConfig(
            redis_url=server.url,
            key_prefix="outage",
            daily_user_limit=100,
            spool_path=tmp_path / "spool",
            breaker_reset_seconds=0.1,
            spool_replay_interval_seconds=0.05,
        )
    )
    app = create_app(budget, api_keys=[KEY])
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t"
        ) as client:
            before = await client.post(
                "/spend", json={"user_id": "u", "cost": "1"}, headers=AUTH
            )
            assert before.json()["spooled"] is False
            server.kill()
            assert (await client.get("/health")).status_code == 503
            check = await client.post("/check", json={"user_id": "u"}, headers=AUTH)
            assert check.status_code == 503
            during = {"user_id": "u", "cost": "2.5", "idempotency_key": "during"}
            spooled = await client.post("/spend", json=during, headers=AUTH)
            assert spooled.status_code == 200
            assert spooled.json()["spooled"] is True
            server.start()
            spent = None
            for _ in range(200):  # the replayer runs every 50 ms
                await asyncio.sleep(0.05)
                usage = await client.get("/v1/usage/u", headers=AUTH)
                if usage.status_code == 200:
                    spent = usage.json()["scopes"]["user"]["daily"]["spent"]
                    if spent == "3.5":
                        break
            assert spent == "3.5"
            retried = await client.post("/spend", json=during, headers=AUTH)
            assert retried.status_code == 200
            assert retried.json()["replayed"] is True
            usage = await client.get("/v1/usage/u", headers=AUTH)
            assert usage.json()["scopes"]["user"]["daily"]["spent"] == "3.5"
            assert (await client.get("/health")).status_code == 200
    finally:
        await budget.aclose()
        server.kill()


async def test_fail_open_admits_without_remaining(tmp_path: Path) -> None:
    budget = _dead_budget(tmp_path, fail_open=True)
    app = create_app(budget, api_keys=[KEY])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/check", json={"user_id": "u"}, headers=AUTH)
    assert response.status_code == 200
    assert response.json()["remaining"] is None
    await budget.aclose()


# -- metrics and the OpenAPI document ------------------------------------------


async def test_metrics_count_decisions_facts_and_latency(
    make_client: MakeClient,
) -> None:
    client = make_client(daily_user_limit=1)
    await client.post("/check", json={"user_id": "u"}, headers=AUTH)
    await client.post("/spend", json={"user_id": "u", "cost": 1}, headers=AUTH)
    await client.post("/spend", json={"user_id": "u", "cost": 1}, headers=AUTH)
    await client.post("/check", json={"user_id": "u"}, headers=AUTH)
    response = await client.get("/metrics", headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert (
        'spendgate_decisions_total{endpoint="check",outcome="allowed",'
        'scope="none",window="none"} 1.0' in text
    )
    assert (
        'spendgate_decisions_total{endpoint="check",outcome="refused",'
        'scope="user",window="daily"} 1.0' in text
    )
    assert 'spendgate_facts_total{endpoint="spend",outcome="recorded"} 2.0' in text
    assert (
        'spendgate_request_duration_seconds_count{method="POST",route="/check"} 2.0'
        in text
    )
    # Two facts wait in the ledger stream (no flusher runs here).
    assert "spendgate_ledger_backlog_entries 2.0" in text


async def test_openapi_documents_every_endpoint(make_client: MakeClient) -> None:
    client = make_client()
    document = (await client.get("/openapi.json", headers=AUTH)).json()
    paths = document["paths"]
    expected = {
        ("/health", "get"),
        ("/check", "post"),
        ("/spend", "post"),
        ("/v1/reserve", "post"),
        ("/v1/settle", "post"),
        ("/v1/release", "post"),
        ("/v1/credits", "post"),
        ("/v1/usage/{user_id}", "get"),
        ("/v1/limits/{scope}/{scope_id}", "get"),
        ("/v1/limits/{scope}/{scope_id}", "put"),
        ("/v1/limits/{scope}/{scope_id}", "delete"),
        ("/metrics", "get"),
    }
    documented = {(p, m) for p, methods in paths.items() for m in methods}
    assert expected <= documented
    for path, method in expected:
        operation = paths[path][method]
        if method in ("post", "put"):
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            assert schema["additionalProperties"] is False, path
        if path != "/health":
            assert operation.get("security"), path
            assert "401" in operation["responses"], path
    check_responses = paths["/check"]["post"]["responses"]
    assert {"200", "422", "429", "503"} <= set(check_responses)


# -- schemathesis over the OpenAPI document ------------------------------------


@pytest.mark.slow
def test_schemathesis_finds_no_server_error() -> None:
    """Generated requests, valid and invalid, for every operation: never a 5xx.

    The app runs on the embedded store (schemathesis drives ASGI apps from
    its own event loop thread) with small caps, so refusals happen too.
    """
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.generation import GenerationMode

    config = BudgetConfig(
        key_prefix="schemathesis",
        daily_user_limit=5,
        daily_project_limit=50,
        daily_global_limit=500,
    )
    app = create_app(config, api_keys=[KEY])
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=AUTH)
    failures: list[str] = []
    operations = 0
    ran = 0
    statuses: collections.Counter[int] = collections.Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode)

            @settings(
                max_examples=25,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=strategy)
            def run(case: Any) -> None:
                response = case.call(headers=AUTH)
                statuses[response.status_code] += 1
                if response.status_code >= 500:
                    failures.append(
                        f"{case.method} {case.formatted_path} -> "
                        f"{response.status_code}: {response.text[:200]}"
                    )

            try:
                run()
            except Unsatisfiable:
                # Nothing invalid can be generated for an operation without
                # parameters or body (GET /health, GET /metrics).
                assert mode is GenerationMode.NEGATIVE
                continue
            ran += 1
    assert operations >= 12
    assert ran > operations
    # The run reached the handlers (authenticated), valid and invalid alike;
    # negative cases also send broken credentials, hence some 401s.
    assert statuses[200] > 50, statuses
    assert statuses[422] > 50, statuses
    assert not failures, "\n".join(failures[:10])
