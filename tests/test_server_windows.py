"""The HTTP side of per-minute caps, the kill switch, weekly windows and the
window time zone.

How: the app over a budget of the conftest ``make_budget`` fixture (both
backends), through ``httpx.ASGITransport``, sharing the budget's fake clock
so ``Retry-After`` is exact. A per-minute refusal is a 429 naming the
window ``"minute"`` and when it frees up; ``PUT /v1/limits`` takes
``weekly`` and ``per_minute`` (422 where the deployment does not count
them, and nothing changes); ``/v1/usage`` shows the week, the minute and
the kill switch.
"""

from __future__ import annotations

from datetime import UTC, datetime

from conftest import FakeClock
from server_helpers import AUTH, MakeClient, make_client

__all__ = ["make_client"]  # (the fixture, shared with test_server)


async def test_a_per_minute_refusal_is_a_429_that_says_when(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(per_minute_user_limit="1", kill_switch_seconds=600)
    spend = {"user_id": "u", "cost": "1"}
    assert (await client.post("/spend", json=spend, headers=AUTH)).status_code == 200
    clock.advance(30)
    check = {"user_id": "u", "estimated_cost": "0.5"}
    response = await client.post("/check", json=check, headers=AUTH)
    assert response.status_code == 429
    body = response.json()
    assert (body["window"], body["scope"], body["limit"]) == ("minute", "user", "1")
    # The minute reached its cap: the kill switch refuses for 600 s from now.
    assert body["resets_at"] == "2026-03-15T12:10:30+00:00"
    assert response.headers["retry-after"] == "600"
    usage = (await client.get("/v1/usage/u", headers=AUTH)).json()
    user = usage["scopes"]["user"]
    assert user["kill_switch_until"] == "2026-03-15T12:10:30+00:00"
    assert user["minute"]["limit"] == "1"
    assert user["minute"]["spent"] == "1"
    assert user["minute"]["resets_at"] == "2026-03-15T12:01:00+00:00"
    assert user["weekly"] is None
    assert usage["scopes"]["global"]["minute"] is None


async def test_limits_take_weekly_and_per_minute_caps(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(weekly_caps=True, per_minute_caps=True)
    put = await client.put(
        "/v1/limits/user/u", json={"weekly": "7", "per_minute": 0.5}, headers=AUTH
    )
    assert put.status_code == 200
    assert put.json() == {
        "scope": "user",
        "scope_id": "u",
        "daily": None,
        "monthly": None,
        "weekly": "7",
        "per_minute": "0.5",
        "overridden": ["per_minute", "weekly"],
        "model": None,  # (the scope's own caps, not a model's)
        "action": None,
        "thresholds": [],
    }
    refused = await client.post(
        "/check", json={"user_id": "u", "estimated_cost": "0.6"}, headers=AUTH
    )
    assert refused.json()["window"] == "minute"
    assert refused.json()["resets_at"] == "2026-03-15T12:01:00+00:00"
    usage = (await client.get("/v1/usage/u", headers=AUTH)).json()
    assert usage["scopes"]["user"]["weekly"]["limit"] == "7"
    # The week of Sunday 2026-03-15 ends on Monday 16th, 00:00 UTC.
    assert usage["scopes"]["user"]["weekly"]["resets_at"] == (
        "2026-03-16T00:00:00+00:00"
    )
    put = await client.put("/v1/limits/user/u", json={"weekly": None}, headers=AUTH)
    assert put.json()["weekly"] is None
    assert put.json()["per_minute"] == "0.5"


async def test_limits_refuse_windows_the_deployment_does_not_count(
    make_client: MakeClient,
) -> None:
    client = make_client(daily_user_limit=10)
    for field in ("weekly", "per_minute"):
        put = await client.put(
            "/v1/limits/user/u", json={field: "1", "daily": "5"}, headers=AUTH
        )
        assert put.status_code == 422
        assert "caps are off" in put.json()["detail"]
    got = (await client.get("/v1/limits/user/u", headers=AUTH)).json()
    assert got["daily"] == "10"  # nothing changed
    assert got["overridden"] == []


async def test_usage_in_a_time_zone_resets_at_local_midnight(
    make_client: MakeClient, clock: FakeClock
) -> None:
    clock.set(datetime(2026, 3, 8, 12, tzinfo=UTC))  # 08:00 EDT, Sunday
    client = make_client(window_timezone="America/New_York", weekly_caps=True)
    body = (await client.get("/v1/usage/u", headers=AUTH)).json()
    user = body["scopes"]["user"]
    assert user["daily"]["resets_at"] == "2026-03-09T04:00:00+00:00"
    assert user["weekly"]["resets_at"] == "2026-03-09T04:00:00+00:00"
    assert user["monthly"]["resets_at"] == "2026-04-01T04:00:00+00:00"
