"""The HTTP server, in process: the operators' endpoints, the metrics and the
OpenAPI document.

Each test builds the app over a budget from the conftest ``make_budget``
fixture (through ``make_client`` in tests/server_helpers.py), on the real
Redis and on the embedded fakeredis, through ``httpx.ASGITransport``.
Checked: ``/v1/usage`` reports every scope's spent, held, limit, remaining
and reset, and an id with a slash reaches its own entity; ``/v1/credits``
adds to the balance, replays an idempotency key and refuses a different
amount under it (409); ``/v1/limits`` gets, puts (effective on the next
call, a field left out kept, null removing a cap) and deletes overrides;
what a sharded deployment cannot decide is the client's 422; ``/metrics``
counts decisions, facts, latency (by known methods only) and the ledger
backlog; the OpenAPI
document lists every endpoint with closed request bodies and security. A
schemathesis run over the document (bounded: a few dozen examples per
operation and mode) checks that no generated input, valid or not, gets a
5xx.
"""

from __future__ import annotations

import collections
from typing import Any

import pytest

from server_helpers import AUTH, KEY, MakeClient, make_client
from spendgate import BudgetConfig
from spendgate.server import create_app

__all__ = ["make_client"]  # (the fixture, imported)


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


async def test_latency_is_labelled_by_known_methods_only(
    make_client: MakeClient,
) -> None:
    # Each made-up method (no key needed to send one) was a series of its own.
    client = make_client()
    for method in ("ZZ0", "ZZ1", "ZZ2"):
        response = await client.request(method, "/check")
        assert response.status_code in (404, 405)
    text = (await client.get("/metrics", headers=AUTH)).text
    assert "ZZ" not in text
    assert (
        'spendgate_request_duration_seconds_count{method="other",route="/check"} 3.0'
        in text
    )


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
