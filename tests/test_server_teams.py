"""The HTTP server's teams: ``/v1/teams`` and ``team_id`` in the charge bodies.

How: the app over a budget of ``test_server``'s ``make_client`` fixture (real
Redis and fakeredis, in process through ``httpx.ASGITransport``): a team is
made, members put and deleted, the pool credited, and charged through
``/spend``, ``/v1/reserve`` and ``/v1/reserve_up_to``, a team lease
extended (``/v1/extend``); each answer's status and body are checked,
errors included (404 no team, 409 exists, 403 not a member, 429 a member
cap, 422 a bad role, 422 a new team's id with a slash), and the 403 and
404 of a charge are in its document.
"""

from __future__ import annotations

import re

import pytest

from server_helpers import AUTH, MakeClient, make_client

__all__ = ["make_client"]  # (the fixture, used by name)


async def test_teams_over_http(make_client: MakeClient) -> None:
    client = make_client()
    made = await client.post(
        "/v1/teams",
        json={"team_id": "eng", "name": "Eng", "initial_balance": "20"},
        headers=AUTH,
    )
    assert made.status_code == 201 and made.json()["balance"] == "20"
    again = await client.post("/v1/teams", json={"team_id": "eng"}, headers=AUTH)
    assert again.status_code == 409
    assert (await client.get("/v1/teams/nope", headers=AUTH)).status_code == 404
    put = await client.put(
        "/v1/teams/eng/members/ada",
        json={"role": "admin", "daily_cap": "5"},
        headers=AUTH,
    )
    assert put.status_code == 200 and put.json()["status"] == "added"
    put = await client.put("/v1/teams/eng/members/ada", json={}, headers=AUTH)
    assert put.json()["status"] == "updated"  # the role back to member, no caps
    bad = await client.put(
        "/v1/teams/eng/members/bob", json={"role": "a|b"}, headers=AUTH
    )
    assert bad.status_code == 422
    await client.put("/v1/teams/eng/members/ada", json={"daily_cap": "5"}, headers=AUTH)
    credit = await client.post(
        "/v1/teams/eng/credits",
        json={"amount": "10", "idempotency_key": "c1"},
        headers=AUTH,
    )
    assert credit.status_code == 200 and credit.json()["balance"] == "30"
    spend = await client.post(
        "/spend", json={"user_id": "ada", "cost": "2", "team_id": "eng"}, headers=AUTH
    )
    assert spend.status_code == 200 and spend.json()["team_id"] == "eng"
    lease = await client.post(
        "/v1/reserve",
        json={"user_id": "ada", "amount": "1", "team_id": "eng"},
        headers=AUTH,
    )
    assert lease.status_code == 200 and lease.json()["team_id"] == "eng"
    settled = await client.post(
        "/v1/settle",
        json={"lease_id": lease.json()["lease_id"], "actual_cost": "1"},
        headers=AUTH,
    )
    # (the pool paid: the answer names the team, as /spend's and /v1/reserve's)
    assert settled.status_code == 200 and settled.json()["team_id"] == "eng"
    over = await client.post(
        "/v1/reserve_up_to",
        json={"user_id": "ada", "max_amount": "9", "min_amount": "3", "team_id": "eng"},
        headers=AUTH,
    )
    assert over.status_code == 429 and over.json()["scope"] == "team_member"
    upto = await client.post(
        "/v1/reserve_up_to",
        json={"user_id": "ada", "max_amount": "9", "team_id": "eng"},
        headers=AUTH,
    )
    assert upto.status_code == 200 and upto.json()["amount"] == "2"
    # a team lease grows by id: the member's cap (5) binds it as a reserve
    upto_id = upto.json()["lease_id"]
    grown = await client.post(
        "/v1/extend", json={"lease_id": upto_id, "more": "0"}, headers=AUTH
    )
    assert grown.status_code == 200 and grown.json()["amount"] == "2"
    capped = await client.post(
        "/v1/extend", json={"lease_id": upto_id, "more": "1"}, headers=AUTH
    )
    assert capped.status_code == 429 and capped.json()["scope"] == "team_member"
    stranger = await client.post(
        "/spend", json={"user_id": "eve", "cost": "1", "team_id": "eng"}, headers=AUTH
    )
    assert stranger.status_code == 403
    team = (await client.get("/v1/teams/eng", headers=AUTH)).json()
    assert (team["balance"], team["held"], team["available"]) == ("27", "2", "25")
    [ada] = team["members"]
    assert (ada["user_id"], ada["role"], ada["daily_cap"]) == ("ada", "member", "5")
    assert (ada["spent_today"], ada["held"]) == ("3", "2")
    gone = await client.delete("/v1/teams/eng/members/ada", headers=AUTH)
    assert gone.status_code == 200 and gone.json()["status"] == "removed"
    gone = await client.delete("/v1/teams/eng/members/ada", headers=AUTH)
    assert gone.status_code == 403
    # a removed member's lease is not extended (it still settles)
    removed = await client.post(
        "/v1/extend", json={"lease_id": upto_id, "more": "0"}, headers=AUTH
    )
    assert removed.status_code == 403


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/spend", {"cost": "1"}),
        ("/v1/reserve", {"amount": "1"}),
        ("/v1/reserve_up_to", {"max_amount": "1"}),
    ],
)
async def test_team_refusals_are_documented(
    make_client: MakeClient, path: str, body: dict[str, str]
) -> None:
    """A charge naming a team answers 404 (no such team) and 403 (not a
    member), and the operation's document lists both: it listed neither,
    so a client generated from it had no case for them."""
    client = make_client()
    await client.post("/v1/teams", json={"team_id": "eng"}, headers=AUTH)
    unknown = await client.post(
        path, json={**body, "user_id": "ada", "team_id": "nope"}, headers=AUTH
    )
    stranger = await client.post(
        path, json={**body, "user_id": "ada", "team_id": "eng"}, headers=AUTH
    )
    assert (unknown.status_code, stranger.status_code) == (404, 403)
    assert unknown.json()["detail"] == "no team 'nope'"
    document = (await client.get("/openapi.json", headers=AUTH)).json()
    documented = document["paths"][path]["post"]["responses"]
    assert {"403", "404"} <= set(documented)
    assert "team" in documented["404"]["description"]


async def test_a_team_id_with_a_slash_is_not_made(make_client: MakeClient) -> None:
    """No path could name such a team (no member could be added to it over
    HTTP, so its every charge was a 403): it is refused, and the document's
    pattern says so."""
    client = make_client()
    made = await client.post("/v1/teams", json={"team_id": "eng/ml"}, headers=AUTH)
    assert made.status_code == 422
    assert made.json()["errors"][0]["loc"] == ["team_id"]
    charge = {"user_id": "ada", "cost": "1", "team_id": "eng/ml"}
    assert (await client.post("/spend", json=charge, headers=AUTH)).status_code == 404
    document = (await client.get("/openapi.json", headers=AUTH)).json()
    body = document["paths"]["/v1/teams"]["post"]["requestBody"]
    pattern = body["content"]["application/json"]["schema"]["properties"]["team_id"]
    assert re.fullmatch(pattern["pattern"], "eng/ml") is None
    assert re.fullmatch(pattern["pattern"], "eng-ml") is not None
