"""Per-model caps at the edges: the HTTP server and the operator CLI.

How: the app over a budget of the conftest ``make_budget`` fixture (both
backends) through ``httpx.ASGITransport``: ``PUT /v1/limits/...?model=``
(or ``model`` in the body) sets a model's caps, ``/check`` and
``/v1/reserve`` with a ``model`` are refused with a 429 naming it, and
``/v1/usage/...?model=`` reports it; without ``model_caps`` a model cap is
a 422 and nothing changes. The CLI runs in process against the real Redis
(as ``test_cli``): ``limits set|get|clear --model`` and ``usage --model``.
"""

from __future__ import annotations

import json

import pytest

from cli_helpers import _budget_call, _run, prefix
from server_helpers import AUTH, MakeClient, make_client
from spendgate import BudgetExceededError
from spendgate.cli import EXIT_OK, EXIT_USAGE

__all__ = ["make_client", "prefix"]  # (the fixtures, shared)

GPT = "gpt-4o"


async def test_http_sets_checks_and_reports_a_model_cap(
    make_client: MakeClient,
) -> None:
    client = make_client(model_caps=True)
    put = await client.put(
        f"/v1/limits/project/p1?model={GPT}", json={"daily": "2"}, headers=AUTH
    )
    assert put.status_code == 200
    assert put.json() == {
        "scope": "project",
        "scope_id": "p1",
        "daily": "2",
        "monthly": None,
        "weekly": None,
        "per_minute": None,
        "overridden": ["daily"],
        "action": None,  # (a model's cap refuses: it has no action)
        "thresholds": [],
        "model": GPT,
    }
    # (the model in the body says the same)
    body = {"monthly": "5", "model": GPT}
    put = await client.put("/v1/limits/project/p1", json=body, headers=AUTH)
    assert (put.json()["daily"], put.json()["monthly"]) == ("2", "5")
    got = await client.get(f"/v1/limits/project/p1?model={GPT}", headers=AUTH)
    assert got.json()["overridden"] == ["daily", "monthly"]
    spend = {"user_id": "u", "cost": "1.5", "project_id": "p1", "model": GPT}
    assert (await client.post("/spend", json=spend, headers=AUTH)).status_code == 200
    check = {"user_id": "u", "project_id": "p1", "estimated_cost": "1", "model": GPT}
    refused = await client.post("/check", json=check, headers=AUTH)
    assert refused.status_code == 429
    assert (refused.json()["model"], refused.json()["scope"]) == (GPT, "project")
    reserve = {"user_id": "u", "project_id": "p1", "amount": "1", "model": GPT}
    assert (
        await client.post("/v1/reserve", json=reserve, headers=AUTH)
    ).status_code == 429
    other = {**check, "model": "gpt-4o-mini"}
    allowed = await client.post("/check", json=other, headers=AUTH)
    assert allowed.status_code == 200
    usage = await client.get(f"/v1/usage/u?project_id=p1&model={GPT}", headers=AUTH)
    project = usage.json()["scopes"]["project"]["model"]
    assert project["model"] == GPT
    assert (project["daily"]["spent"], project["daily"]["limit"]) == ("1.5", "2")
    assert usage.json()["scopes"]["user"]["model"]["daily"]["limit"] is None
    plain = await client.get("/v1/usage/u", headers=AUTH)
    assert plain.json()["scopes"]["user"]["model"] is None
    cleared = await client.delete(f"/v1/limits/project/p1?model={GPT}", headers=AUTH)
    assert (cleared.json()["daily"], cleared.json()["monthly"]) == (None, None)
    assert (await client.post("/check", json=check, headers=AUTH)).status_code == 200


async def test_http_refuses_model_caps_where_they_are_off(
    make_client: MakeClient,
) -> None:
    client = make_client()
    put = await client.put(
        f"/v1/limits/user/u?model={GPT}", json={"daily": "2"}, headers=AUTH
    )
    assert put.status_code == 422
    assert "model_caps" in put.json()["detail"]
    usage = await client.get(f"/v1/usage/u?model={GPT}", headers=AUTH)
    assert usage.status_code == 422
    both = await client.put(
        "/v1/limits/user/u?model=a", json={"daily": "2", "model": "b"}, headers=AUTH
    )
    assert both.status_code == 422


def test_cli_limits_and_usage_of_a_model(
    prefix: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPENDGATE_MODEL_CAPS", "true")
    code, out, _ = _run(
        capsys, "limits", "set", "user", "alice", "--model", GPT, "--daily", "3"
    )
    assert code == EXIT_OK
    rows = [line.split() for line in out.splitlines()[1:]]
    assert rows == [
        ["user", "alice", GPT, "daily", "3", "override"],
        ["user", "alice", GPT, "monthly", "no", "cap", "none"],
    ]
    code, out, _ = _run(
        capsys, "limits", "get", "user", "alice", "--model", GPT, "--json"
    )
    assert json.loads(out)["model"] == GPT and json.loads(out)["daily"] == "3"
    _budget_call("add_credits", "alice", 100)
    _budget_call("record_spend", "alice", "2.5", model=GPT)
    with pytest.raises(BudgetExceededError):
        _budget_call("check_availability", "alice", None, 1, model=GPT)
    code, out, _ = _run(capsys, "usage", "alice", "--model", GPT)
    assert code == EXIT_OK
    row = next(line.split() for line in out.splitlines() if f"{GPT} daily" in line)
    assert row[:6] == ["user", "alice", GPT, "daily", "2.5", "0"]
    code, out, _ = _run(capsys, "usage", "alice", "--model", GPT, "--json")
    assert json.loads(out)["scopes"]["user"]["model"]["daily"]["remaining"] == "0.5"
    code, _, _ = _run(capsys, "limits", "clear", "user", "alice", "--model", GPT)
    assert code == EXIT_OK
    assert _budget_call("check_availability", "alice", None, 1, model=GPT)


def test_cli_model_caps_off_exits_2(
    prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(
        capsys, "limits", "set", "user", "alice", "--model", GPT, "--daily", "3"
    )
    assert code == EXIT_USAGE
    assert "SPENDGATE_MODEL_CAPS" in err
