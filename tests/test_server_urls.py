"""Ids in the URL: a path or query whose percent-escapes are not UTF-8 is a
422 and changes nothing, so two different raw ids never name one entity.

How: the app over a budget of the conftest ``make_budget`` fixture (both
backends), through ``httpx.ASGITransport`` (which, like uvicorn, hands the
app the raw path). ``caf%E9`` and ``caf%FC`` (Latin-1 "café" and "cafü")
used to both reach the routes as ``"caf\\ufffd"``: caps set for one were
the other's. UTF-8 escapes, U+FFFD's own included, keep working. A query
parameter the route does not take, or one given twice, is a 422 as an
unknown body field is: a mistyped ``dry_run`` used to run the real sweep.
So is a body sent to a route that takes none: ``{"dry_run": true}`` in the
sweep's body used to run the real sweep, ``{"model": ...}`` in a DELETE of
caps to clear the scope's own caps.
"""

from __future__ import annotations

import pytest

from conftest import FakeClock
from server_helpers import AUTH, MakeClient, make_client
from spendgate.server.url import url_problem

__all__ = ["make_client"]  # (the fixture, shared with test_server)


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("PUT", "/v1/limits/user/caf%E9"),
        ("GET", "/v1/limits/user/caf%FC"),
        ("GET", "/v1/usage/%FF"),
        ("GET", "/v1/usage/u?project_id=caf%E9"),
        ("GET", "/v1/balance/%C3"),
    ],
)
async def test_escapes_that_are_not_utf8_are_422(
    make_client: MakeClient, method: str, url: str
) -> None:
    client = make_client()
    body = {"daily": "1"} if method == "PUT" else None
    response = await client.request(method, url, json=body, headers=AUTH)
    assert response.status_code == 422
    where = "query" if "?" in url else "path"
    assert response.json()["errors"][0]["loc"] == [where]
    assert "not UTF-8" in response.json()["detail"]


async def test_a_latin1_id_does_not_set_another_ids_caps(
    make_client: MakeClient,
) -> None:
    client = make_client()
    put = await client.put("/v1/limits/user/caf%E9", json={"daily": "1"}, headers=AUTH)
    assert put.status_code == 422
    # Nothing changed, under any name the escape could have become.
    for name in ("caf%EF%BF%BD", "caf%C3%A9"):
        got = await client.get(f"/v1/limits/user/{name}", headers=AUTH)
        assert got.status_code == 200
        assert got.json()["overridden"] == []


async def test_utf8_escapes_name_their_ids(make_client: MakeClient) -> None:
    client = make_client()
    put = await client.put(
        "/v1/limits/user/caf%C3%A9", json={"daily": "2"}, headers=AUTH
    )
    assert (put.status_code, put.json()["scope_id"]) == (200, "café")
    replacement = await client.get(
        "/v1/usage/%EF%BF%BD?project_id=%C3%BC", headers=AUTH
    )
    assert replacement.status_code == 200
    assert replacement.json()["user_id"] == "\ufffd"
    assert replacement.json()["project_id"] == "ü"


def test_url_problem_names_the_part() -> None:
    assert url_problem(b"/v1/usage/ada", b"") is None
    assert url_problem(b"/v1/usage/caf%C3%A9", b"project_id=%E2%82%AC") is None
    assert url_problem(b"/v1/usage/caf%E9", b"") == "path"
    assert url_problem(b"/v1/usage/u", b"project_id=%FF") == "query"
    assert url_problem("/v1/usage/é".encode("latin-1"), b"") == "path"


async def test_a_mistyped_dry_run_sweeps_nothing(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client()
    grant = {"user_id": "u", "amount": "5", "expires_at": "2026-03-15T12:00:01+00:00"}
    assert (await client.post("/v1/credits", json=grant, headers=AUTH)).is_success
    clock.advance(2)
    typo = await client.post("/v1/credits/sweep?dryrun=true", headers=AUTH)
    assert typo.status_code == 422
    assert typo.json()["errors"][0]["loc"] == ["query", "dryrun"]
    # The grant is still there to expire: the typo swept nothing.
    dry = await client.post("/v1/credits/sweep?dry_run=true", headers=AUTH)
    assert dry.json() == {"dry_run": True, "count": 1, "amount": "5"}


@pytest.mark.parametrize(
    "url",
    [
        "/v1/usage/u?project=p",
        "/v1/usage/u?project_id=p&project_id=q",
        "/v1/limits/user/u?models=gpt",
    ],
)
async def test_unknown_or_repeated_query_parameters_are_422(
    make_client: MakeClient, url: str
) -> None:
    response = await make_client().get(url, headers=AUTH)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"][0] == "query"


async def test_known_query_parameters_still_work(make_client: MakeClient) -> None:
    client = make_client()
    usage = await client.get("/v1/usage/u?project_id=p", headers=AUTH)
    assert usage.status_code == 200 and "project" in usage.json()["scopes"]
    sweep = await client.post("/v1/credits/sweep?dry_run=false", headers=AUTH)
    assert sweep.status_code == 200


async def test_a_dry_run_in_the_body_sweeps_nothing(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client()
    grant = {"user_id": "u", "amount": "5", "expires_at": "2026-03-15T12:00:01+00:00"}
    assert (await client.post("/v1/credits", json=grant, headers=AUTH)).is_success
    clock.advance(2)
    sent = await client.post("/v1/credits/sweep", json={"dry_run": True}, headers=AUTH)
    assert sent.status_code == 422
    assert sent.json()["errors"][0]["loc"] == ["body"]
    dry = await client.post("/v1/credits/sweep?dry_run=true", json={}, headers=AUTH)
    assert dry.json() == {"dry_run": True, "count": 1, "amount": "5"}


async def test_a_body_to_a_route_without_one_changes_nothing(
    make_client: MakeClient,
) -> None:
    client = make_client()
    put = await client.put("/v1/limits/user/u", json={"daily": "3"}, headers=AUTH)
    assert put.status_code == 200
    cleared = await client.request(
        "DELETE", "/v1/limits/user/u", json={"model": "gpt-4o"}, headers=AUTH
    )
    assert cleared.status_code == 422
    assert cleared.json()["errors"][0]["loc"] == ["body"]
    kept = await client.get("/v1/limits/user/u", headers=AUTH)
    assert (kept.json()["daily"], kept.json()["overridden"]) == ("3", ["daily"])
    usage = await client.request(
        "GET", "/v1/usage/u", content=b'{"project_id": "p"}', headers=AUTH
    )
    assert usage.status_code == 422
    blank = await client.request("GET", "/v1/usage/u", content=b" ", headers=AUTH)
    assert blank.status_code == 200
