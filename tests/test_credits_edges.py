"""Grants, balances, refunds and the sweep at the edges: the HTTP service
(``POST /v1/credits`` with grant terms, ``GET /v1/balance/{user}``,
``POST /v1/refunds``, ``POST /v1/credits/sweep``) and the command line
(``credits add|sweep``, ``balance``, ``refund``).

How: the service in process over the test's budget (``test_server``'s
``make_client``: real Redis and fakeredis, injected clock); the commands on
the real Redis under a fresh prefix (``test_cli``'s ``prefix``), their
output read as text and JSON, their exit codes checked.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from cli_helpers import _budget_call, _run, prefix
from conftest import FakeClock
from server_helpers import AUTH, MakeClient, make_client
from spendgate.cli import EXIT_OK, EXIT_USAGE

__all__ = ["make_client", "prefix"]  # (fixtures, used by name)


# -- the service -----------------------------------------------------------------


async def test_grants_balance_refund_and_sweep_over_http(
    make_client: MakeClient, clock: FakeClock
) -> None:
    client = make_client(enforce_balance=True)
    expires = (clock.now + timedelta(hours=1)).isoformat()
    promo = await client.post(
        "/v1/credits",
        json={"user_id": "u", "amount": 2, "expires_at": expires, "kind": "promo"},
        headers=AUTH,
    )
    assert promo.status_code == 200, promo.text
    paid = {"user_id": "u", "amount": "10", "priority": 1, "kind": "paid"}
    assert (await client.post("/v1/credits", json=paid, headers=AUTH)).json()[
        "balance"
    ] == "12"
    spent = (
        await client.post("/spend", json={"user_id": "u", "cost": 3}, headers=AUTH)
    ).json()
    body = (await client.get("/v1/balance/u", headers=AUTH)).json()
    assert (body["total"], body["available"], body["held"]) == ("9", "9", "0")
    assert [(g["kind"], g["remaining"], g["priority"]) for g in body["grants"]] == [
        ("paid", "9", 1)
    ]
    refund = await client.post(
        "/v1/refunds",
        json={"entry_id": spent["entry_id"], "amount": "2", "reason": "oops"},
        headers=AUTH,
    )
    assert refund.status_code == 200, refund.text
    assert refund.json() == {
        **refund.json(),
        "status": "refunded",
        "charge_id": spent["entry_id"],
        "refunded": "2",
        "refundable_left": "1",
        "balance_after": "11",  # the paid grant's 1, and the promo's 1 again
    }
    too_much = await client.post(
        "/v1/refunds", json={"entry_id": spent["entry_id"], "amount": 5}, headers=AUTH
    )
    assert too_much.status_code == 409 and "1 left" in too_much.json()["detail"]
    unknown = await client.post("/v1/refunds", json={"entry_id": "nope"}, headers=AUTH)
    assert unknown.status_code == 404
    clock.advance(hours=2)
    dry = await client.post("/v1/credits/sweep?dry_run=true", headers=AUTH)
    assert dry.json() == {"dry_run": True, "count": 1, "amount": "1"}
    swept = await client.post("/v1/credits/sweep", headers=AUTH)
    assert swept.json() == {"dry_run": False, "count": 1, "amount": "1"}


@pytest.mark.parametrize(
    "extra",
    [
        {"expires_at": "tomorrow"},
        {"expires_at": "2030-01-01T00:00:00"},  # no offset
        {"expires_at": "2020-01-01T00:00:00Z"},  # passed
        {"priority": "1"},
        {"priority": 1.5},
        {"kind": "a b"},
    ],
)
async def test_invalid_grant_terms_are_a_422(
    make_client: MakeClient, extra: dict[str, object]
) -> None:
    client = make_client()
    response = await client.post(
        "/v1/credits", json={"user_id": "u", "amount": 1, **extra}, headers=AUTH
    )
    assert response.status_code == 422, response.text
    assert (await client.get("/v1/balance/u", headers=AUTH)).json()["total"] == "0"


# -- the command line ----------------------------------------------------------------


def test_credits_balance_refund_and_sweep_commands(
    prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(
        capsys,
        "credits",
        "add",
        "ada",
        "2",
        "--kind",
        "promo",
        "--expires-at",
        "2099-01-01T00:00:00Z",
    )
    assert code == EXIT_OK and "added 2 USD: balance of ada 2" in out
    code, out, _ = _run(capsys, "credits", "add", "ada", "5", "--priority", "1")
    assert code == EXIT_OK
    spent = _budget_call("record_spend", "ada", 3)
    code, out, _ = _run(capsys, "balance", "ada", "--json")
    body = json.loads(out)
    assert code == EXIT_OK and body["total"] == "4"
    assert [(g["kind"], g["remaining"]) for g in body["grants"]] == [("purchase", "4")]
    code, out, _ = _run(capsys, "balance", "ada")
    assert "balance of user ada: 4 USD" in out and "purchase" in out
    code, out, _ = _run(capsys, "refund", spent.entry_id, "--amount", "1", "--json")
    assert code == EXIT_OK
    assert json.loads(out)["refundable_left"] == "2"
    code, out, _ = _run(capsys, "refund", spent.entry_id)
    assert code == EXIT_OK and "refunded 2 USD" in out and "balance 7" in out
    code, _, err = _run(capsys, "refund", spent.entry_id)
    assert code == EXIT_USAGE and "0 left" in err
    code, out, _ = _run(capsys, "credits", "sweep", "--dry-run")
    assert code == EXIT_OK and out.startswith("would expire 0 grants")
    code, out, _ = _run(capsys, "credits", "sweep", "--json")
    assert json.loads(out) == {"dry_run": False, "count": 0, "amount": "0"}
    code, _, err = _run(capsys, "credits", "add", "ada", "1", "--expires-at", "soon")
    assert code == EXIT_USAGE and "ISO 8601" in err
