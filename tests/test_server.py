"""The HTTP server, in process: health and auth, and the charging endpoints.

Each test builds the app over a budget from the conftest ``make_budget``
fixture (through ``make_client`` in tests/server_helpers.py), so it runs on
the real Redis and on the embedded fakeredis, and talks to it through
``httpx.ASGITransport`` (no socket). The app shares the budget's fake clock,
so ``Retry-After`` is checked to the second. Checked: ``/health`` needs no
key and every other endpoint refuses a missing or wrong one (401), keys come
from the configuration or the environment and an app without keys refuses
to start; ``/check`` answers the smallest remaining and a refusal is a 429
with the reason and when to retry (day, month, balance); ``/spend`` records,
replays an idempotency key and refuses a different fact under it (409),
and reads JSON numbers exactly (amounts; metadata keeps its numbers as
JSON parsers read them); a lease is reserved, counted as held,
settled, replayed, and released, and what conflicts with its state is a 409.
Operators' endpoints, metrics and the OpenAPI document are in
tests/test_server_admin.py; bad input and the store down in
tests/test_server_faults.py.
"""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest

from conftest import MakeBudget
from server_helpers import AUTH, KEY, MakeClient, make_client
from spendgate import BudgetConfig, ConfigurationError
from spendgate.server import BALANCE_RETRY_AFTER_SECONDS, create_app

__all__ = ["make_client"]  # (the fixture, used by name)


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


async def test_metadata_numbers_stay_numbers(make_client: MakeClient) -> None:
    # The exact reading of amounts reached the metadata: 0.7 was kept as
    # the string "0.7", where the library and the CLI keep the number.
    client = make_client()
    text = '{"t": 0.7, "n": [1.0, {"x": 2.5e-3}], "i": 7, "s": "0.7"}'
    headers = {**AUTH, "Content-Type": "application/json"}
    raw = f'{{"user_id": "u", "cost": 1, "metadata": {text}}}'.encode()
    assert (await client.post("/spend", content=raw, headers=headers)).is_success
    listed = await client.get("/v1/transactions/u", headers=AUTH)
    [fact] = listed.json()["transactions"]
    assert fact["metadata"] == json.loads(text)
    assert fact["metadata"]["t"] == 0.7 and fact["metadata"]["s"] == "0.7"
    huge = b'{"user_id": "u", "cost": 1, "metadata": {"x": [1e400]}}'
    refused = await client.post("/spend", content=huge, headers=headers)
    assert refused.status_code == 422
    assert "out of range" in refused.json()["detail"]
    usage = await client.get("/v1/usage/u", headers=AUTH)
    assert usage.json()["scopes"]["user"]["daily"]["spent"] == "1"
    # (their reading does not recurse: deep metadata is taken as before)
    deep = b'{"user_id": "u", "cost": 1, "metadata": {"a": %s0.5%s}}' % (
        b"[" * 500,
        b"]" * 500,
    )
    assert (await client.post("/spend", content=deep, headers=headers)).is_success


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
