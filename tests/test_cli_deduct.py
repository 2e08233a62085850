"""``spendgate deduct`` on the real Redis: an amount, a usage, a fixed job.

How: ``test_cli``'s ``prefix`` fixture points the CLI at the real Redis under
a fresh key prefix (a daily user cap of 10, balances enforced); each command
runs in process (``main``) and its exit code and output (text and
``--json``) are checked, the balance read back with the Python API. A
refusal exits 3 and changes nothing; bad arguments exit 2 and change
nothing; a replay with the same key charges once.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from cli_helpers import _budget_call, _run, prefix
from spendgate.cli import EXIT_OK, EXIT_REFUSED, EXIT_USAGE

__all__ = ["prefix"]  # (the fixture, used by name)

BOOK: dict[str, Any] = {
    "version": 1,
    "models": {"gpt-4o": "input_tokens * 0.0000025 + output_tokens * 0.00001"},
    "tools": {"web_search": "tool_calls * 0.01"},
    "fixed": {"batch_job": 2},
}


def _balance(user: str = "ada") -> Decimal:
    return Decimal(_budget_call("get_balance", user).total)


def test_an_amount_is_charged_once_per_key(
    prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _budget_call("add_credits", "ada", 5)
    argv = ("deduct", "ada", "1.5", "--model", "m1", "--project", "p1")
    code, out, _ = _run(capsys, *argv, "--idempotency-key", "k", "--json")
    assert code == EXIT_OK
    body = json.loads(out)
    assert (body["amount"], body["balance_after"], body["replayed"]) == (
        "1.5",
        "3.5",
        False,
    )
    code, out, _ = _run(capsys, *argv, "--idempotency-key", "k")
    assert code == EXIT_OK and "already charged (same key)" in out
    assert f"entry {body['entry_id']}" in out
    assert _balance() == Decimal("3.5")


def test_a_usage_and_a_fixed_job_are_priced_by_the_book(
    prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _budget_call("publish_pricing", BOOK)
    _budget_call("add_credits", "ada", 5)
    code, out, _ = _run(
        capsys,
        "deduct",
        "ada",
        "--model",
        "gpt-4o",
        "--input-tokens",
        "1000",
        "--output-tokens",
        "200",
        "--tool",
        "web_search",
        "--tool",
        "web_search",
        "--metadata",
        '{"job": 7}',
        "--json",
    )
    assert code == EXIT_OK
    body = json.loads(out)
    # 0.0025 + 0.002 for the tokens, 2 x 0.01 for the searches
    assert (body["amount"], body["price_version"]) == ("0.0245", 1)
    assert body["breakdown"]["tools_by_name"] == {"web_search": "0.02"}
    code, out, _ = _run(capsys, "deduct", "ada", "--fixed", "batch_job")
    assert code == EXIT_OK and "charged 2 " in out and "price book v1" in out
    assert _balance() == Decimal("2.9755")


def test_refusals_exit_3_and_change_nothing(
    prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _budget_call("add_credits", "ada", 2)
    code, _, err = _run(capsys, "deduct", "ada", "3")
    assert code == EXIT_REFUSED and "balance" in err
    _budget_call("add_credits", "ada", 20)
    code, _, err = _run(capsys, "deduct", "ada", "11")  # the daily cap of 10
    assert code == EXIT_REFUSED and "daily" in err
    _budget_call("create_team", "eng", initial_balance=1)
    _budget_call("add_team_member", "eng", "ada")
    code, out, _ = _run(capsys, "deduct", "ada", "0.5", "--team", "eng")
    assert code == EXIT_OK and "to team eng" in out and "balance 0.5" in out
    code, _, err = _run(capsys, "deduct", "ada", "0.75", "--team", "eng")
    assert code == EXIT_REFUSED
    code, _, err = _run(capsys, "deduct", "bob", "0.1", "--team", "eng")
    assert code == EXIT_REFUSED and "not a member" in err
    assert _balance() == Decimal(22)


def test_a_fixed_job_on_a_teams_pool(
    prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _budget_call("publish_pricing", BOOK)
    _budget_call("add_credits", "ada", 5)
    _budget_call("create_team", "eng", initial_balance=5)
    _budget_call("create_team", "ops", initial_balance=5)
    _budget_call("add_team_member", "eng", "ada", daily_cap=3)
    _budget_call("add_team_member", "ops", "ada")
    argv = ("deduct", "ada", "--fixed", "batch_job", "--team", "eng")
    code, out, _ = _run(capsys, *argv, "--idempotency-key", "j", "--json")
    assert code == EXIT_OK
    body = json.loads(out)
    paid_by = [body[k] for k in ("amount", "balance_after", "team_id")]
    assert paid_by == ["2", "3", "eng"]
    code, out, _ = _run(capsys, *argv, "--idempotency-key", "j")
    assert code == EXIT_OK and "already charged (same key)" in out
    assert "to team eng" in out and f"entry {body['entry_id']}" in out
    ops = (*argv[:-1], "ops", "--idempotency-key", "j")  # the key, another team
    code, _, err = _run(capsys, *ops)
    assert code == EXIT_USAGE and "idempotency" in err.lower()
    code, _, err = _run(capsys, *argv)  # 2 + 2 > the member's cap of 3
    assert code == EXIT_REFUSED and "team member daily" in err.lower()
    code, _, err = _run(
        capsys, "deduct", "bob", "--fixed", "batch_job", "--team", "eng"
    )
    assert code == EXIT_REFUSED and "not a member" in err
    team = _budget_call("get_team", "eng")
    assert (team.balance, team.members["ada"].spent_today) == (3, 2)
    assert _budget_call("get_team", "ops").balance == 5
    assert _balance() == 5


@pytest.mark.parametrize(
    "argv",
    [
        ["deduct", "ada"],  # nothing to charge
        ["deduct", "ada", "1", "--input-tokens", "5"],  # both
        ["deduct", "ada", "--fixed", "batch_job", "--model", "m"],
        ["deduct", "ada", "-1"],
        ["deduct", "ada", "abc"],
        ["deduct", "ada", "--input-tokens", "-5"],
        ["deduct", "ada", "1", "--metadata", "[1]"],
        ["deduct", "ada", "1", "--metadata", "{"],
        ["deduct", "", "1"],
        ["deduct", "ada", "--input-tokens", "x"],
    ],
)
def test_bad_arguments_exit_2_and_change_nothing(
    prefix: str, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    _budget_call("add_credits", "ada", 5)
    try:
        code, _, err = _run(capsys, *argv)
    except SystemExit as exit_:  # argparse's own refusal
        code, err = int(str(exit_.code)), capsys.readouterr().err
    assert code == EXIT_USAGE and err
    assert _balance() == 5


def test_a_charge_of_nothing_says_nothing_was_charged(
    prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # A charge of 0 touches nothing (bursar's short-circuit): no entry is
    # written, so the text must not print one (it printed "entry " blank).
    _budget_call("add_credits", "ada", 5)
    code, out, _ = _run(capsys, "deduct", "ada", "0")
    assert code == EXIT_OK
    assert out.splitlines() == ["nothing charged to ada (user ada): it costs 0"]
    assert _balance() == 5
