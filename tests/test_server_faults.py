"""The HTTP server, in process, when the input or the store is wrong: bad
input is a 4xx, the store down a 503 or the spool, never a 500.

Checked: a body that is not JSON, not an object, names a key twice, or has
a field of the wrong type, out of range or unknown is a 422 whose message
says what and where (and deep metadata, once taken, is listed back);
metadata over its limit is a 422 and a body over the size limit a 413
(with or without ``Content-Length``, nothing charged); unknown routes and
methods are 404 and 405. With Redis down (a budget pointed at a port
nothing listens on) ``/health`` and admission are 503 with ``Retry-After``
(fail closed) while facts are accepted into the local spool (200,
``spooled: true``), counted in the metrics; ``fail_open`` admits without a
remaining. A slow test kills a private redis-server mid-traffic and
restarts it: the spooled facts reach Redis exactly once.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import service_missing
from redis_server import RedisServer, redis_server_binary
from server_helpers import AUTH, KEY, MakeClient, make_client
from spendgate import BudgetConfig, BudgetManager
from spendgate.server import create_app

__all__ = ["make_client"]  # (the fixture, imported)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
        ("/v1/adjust", b'{"scope": "user", "amount": 1}', "scope_id is required"),
        ("/v1/adjust", b'{"scope": "project", "amount": 1}', "scope_id is required"),
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


async def test_a_key_given_twice_is_422_and_charges_nothing(
    make_client: MakeClient,
) -> None:
    # Python's parser kept the last "cost" (2) where others keep the first.
    client = make_client()
    headers = {**AUTH, "Content-Type": "application/json"}
    for raw in [
        b'{"user_id": "u", "cost": 1, "cost": 2}',
        b'{"user_id": "u", "cost": 1, "metadata": {"a": 1, "a": 2}}',
    ]:
        response = await client.post("/spend", content=raw, headers=headers)
        assert response.status_code == 422, response.text
        [error] = response.json()["errors"]
        assert error["type"] == "repeated" and error["loc"][0] == "body"
        assert "given more than once" in response.json()["detail"]
    usage = (await client.get("/v1/usage/u", headers=AUTH)).json()
    assert usage["scopes"]["user"]["daily"]["spent"] == "0"


async def test_deep_metadata_does_not_fail_the_transactions(
    make_client: MakeClient,
) -> None:
    # pydantic serializes about 255 levels: the listing of a user whose fact
    # nested deeper was a 500 for as long as the fact was listed.
    client = make_client(max_metadata_bytes=4096)
    deep: object = 1.5
    for _ in range(300):
        deep = [deep]
    body = {"user_id": "u", "cost": 1, "metadata": {"a": deep}}
    assert (await client.post("/spend", json=body, headers=AUTH)).is_success
    listed = await client.get("/v1/transactions/u", headers=AUTH)
    assert listed.status_code == 200
    [fact] = listed.json()["transactions"]
    assert fact["metadata"] == {"a": deep}
    assert (fact["kind"], fact["amount"], fact["user_id"]) == ("spend", "1", "u")


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
