"""Cap actions at the edges: ``PUT /v1/limits`` and ``spendgate limits set``
set and show an action and its thresholds, refuse bad ones (422, exit 2)
and where cap actions are off; a charge's answer carries the thresholds it
reached in ``warn`` scopes; the threshold events reach a webhook (a local
receiver that fails the first three requests), signed, each processed once.
In process, as ``tests/test_server.py``, ``tests/test_cli.py`` and
``tests/test_events_webhook.py`` run them (their fixtures and helpers:
tests/server_helpers.py, cli_helpers.py, webhook_helpers.py)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import redis.asyncio as aioredis

from cli_helpers import _budget_call, _run, prefix  # noqa: F401
from conftest import MakeBudget
from events_helpers import config_of
from server_helpers import AUTH, MakeClient, make_client  # noqa: F401
from spendgate.cli import EXIT_OK, EXIT_USAGE
from spendgate.events import EventDispatcher
from webhook_helpers import Receiver, sink


async def test_put_limits_sets_and_shows_an_action(
    make_client: MakeClient,  # noqa: F811 (the fixture, imported)
) -> None:
    client = make_client(cap_actions=True)
    put = await client.put(
        "/v1/limits/user/u",
        json={"daily": 2, "action": "warn", "thresholds": ["0.8", 0.5]},
        headers=AUTH,
    )
    assert put.status_code == 200, put.text
    assert (put.json()["action"], put.json()["thresholds"]) == (
        "warn",
        ["0.5", "0.8", "1"],
    )
    got = await client.get("/v1/limits/user/u", headers=AUTH)
    assert got.json()["action"] == "warn"
    spent = await client.post("/spend", json={"user_id": "u", "cost": 2}, headers=AUTH)
    assert spent.status_code == 200, spent.text
    assert [(w["threshold"], w["window"]) for w in spent.json()["warnings"]] == [
        ("0.5", "daily"),
        ("0.8", "daily"),
        ("1", "daily"),
    ]
    assert spent.json()["warnings"][-1] == {
        "scope": "user",
        "scope_id": "u",
        "window": "daily",
        "threshold": "1",
        "limit": "2",
        "spent": "2",
    }
    # past the cap: admitted (warn)
    check = await client.post(
        "/check", json={"user_id": "u", "estimated_cost": 1}, headers=AUTH
    )
    assert check.status_code == 200
    # a field left out keeps the action; null drops it
    put = await client.put("/v1/limits/user/u", json={"daily": 3}, headers=AUTH)
    assert put.json()["action"] == "warn"
    put = await client.put("/v1/limits/user/u", json={"action": None}, headers=AUTH)
    assert (put.json()["action"], put.json()["thresholds"]) == (None, [])


@pytest.mark.parametrize(
    "body",
    [
        {"action": "block"},
        {"action": "warn", "thresholds": [2]},
        {"action": "warn", "thresholds": "0.5"},
        {"thresholds": [0.5]},
    ],
)
async def test_put_limits_refuses_bad_actions(
    make_client: MakeClient,  # noqa: F811 (the fixture, imported)
    body: dict[str, object],
) -> None:
    client = make_client(cap_actions=True)
    put = await client.put("/v1/limits/user/u", json=body, headers=AUTH)
    assert put.status_code == 422, put.text
    assert (await client.get("/v1/limits/user/u", headers=AUTH)).json()[
        "action"
    ] is None


async def test_put_limits_refuses_an_action_where_cap_actions_are_off(
    make_client: MakeClient,  # noqa: F811 (the fixture, imported)
) -> None:
    client = make_client()
    put = await client.put("/v1/limits/user/u", json={"action": "warn"}, headers=AUTH)
    assert put.status_code == 422
    assert "cap_actions" in put.text


def test_limits_set_action_on_the_command_line(
    prefix: str,  # noqa: F811 (the fixture, imported)
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPENDGATE_CAP_ACTIONS", "true")
    code, out, _ = _run(
        capsys,
        "limits",
        "set",
        "user",
        "alice",
        "--action",
        "notify",
        "--thresholds",
        "0.9, 0.5",
    )
    assert code == EXIT_OK
    assert "action: notify (thresholds 0.5, 0.9, 1)" in out
    code, out, _ = _run(capsys, "limits", "get", "user", "alice", "--json")
    assert (json.loads(out)["action"], json.loads(out)["thresholds"]) == (
        "notify",
        ["0.5", "0.9", "1"],
    )
    assert _budget_call("set_limits", "user", "alice").action == "notify"
    code, out, _ = _run(capsys, "limits", "set", "user", "alice", "--action", "none")
    assert code == EXIT_OK and "action:" not in out
    assert _budget_call("set_limits", "user", "alice").action is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--thresholds", "0.5"], "with --action"),
        (["--action", "warn", "--thresholds", "1.5"], "(0, 1]"),
        (["--action", "warn", "--thresholds", "x"], "number"),
    ],
)
def test_limits_set_refuses_bad_actions(
    prefix: str,  # noqa: F811 (the fixture, imported)
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    message: str,
) -> None:
    monkeypatch.setenv("SPENDGATE_CAP_ACTIONS", "true")
    code, _, err = _run(capsys, "limits", "set", "user", "alice", *argv)
    assert code == EXIT_USAGE
    assert message in err


async def test_threshold_events_reach_a_webhook_signed_and_once(
    make_budget: MakeBudget, redis_client: aioredis.Redis
) -> None:
    budget = make_budget(cap_actions=True)
    await budget.set_limits("user", "ada", daily=1, action="notify")
    await budget.record_spend("ada", "0.9")
    await budget.record_spend("ada", "0.1")
    with Receiver(fail_first=3) as receiver:
        # (the threshold types only: no fact event for the receiver)
        types = ("credits.cap_warning", "credits.cap_reached")
        dispatcher = EventDispatcher(
            config_of(budget),
            targets=[sink(receiver.url, types=types)],
            redis=redis_client,
        )
        await dispatcher.drain()
        await dispatcher.aclose()
    assert receiver.bad_signatures == 0
    assert len(receiver.processed) == 4
    assert set(receiver.processed.values()) == {1}
    thresholds = sorted(
        (body["type"], body["data"]["threshold"]) for body in receiver.bodies.values()
    )
    assert thresholds == [
        ("credits.cap_reached", "1"),
        ("credits.cap_warning", "0.5"),
        ("credits.cap_warning", "0.8"),
        ("credits.cap_warning", "0.95"),
    ]
    assert Counter(b["scope"] for b in receiver.bodies.values()) == {"user": 4}
