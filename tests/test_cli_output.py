"""What a command does with its output and its arguments at the edges: a
stdout closed by the reader (``spendgate ... | head``), a signed amount
in every decimal spelling (``-1e-3``), which argparse must not take for an
option, ids from the store printed escaped (a team id with a newline), and
``transactions`` reading Postgres alone when it has a DSN (no Redis, no
embedded store: the real Postgres, a fresh database).

How: commands run in process through ``cli.main([...])`` on the real Redis
under a key prefix of the test's own (the ``prefix`` fixture of
tests/cli_helpers.py); a closed stdout is a stand-in ``sys.stdout`` whose
writes raise ``BrokenPipeError``, as a pipe's do once its reader is gone.
The state is read back with the Python API. A closed stdout is exit 1 (the
output is lost), never 4 ("the store did not answer: nothing was done"),
since what the command did is done: a credit retried on that word would be
added twice.
"""

from __future__ import annotations

import io
import json
import sys
from decimal import Decimal

import pytest

from cli_helpers import _budget_call, _run, prefix
from spendgate.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, main

__all__ = ["prefix"]  # (the fixture, used by name)

pytest_plugins = ("pg_fixtures",)


class _ClosedPipe(io.StringIO):
    """A stdout whose reader has gone: every write raises BrokenPipeError."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_a_closed_stdout_is_not_an_unavailable_store(
    prefix: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    as_json: bool,
) -> None:
    argv = ["credits", "add", "ada", "5", *(["--json"] if as_json else [])]
    with monkeypatch.context() as patch:
        patch.setattr("sys.stdout", _ClosedPipe())
        code = main(argv)
    err = capsys.readouterr().err
    assert code == EXIT_FAILURE
    assert "output" in err and "unavailable" not in err
    # The credit was made, once: the exit code does not say otherwise.
    assert _budget_call("get_balance", "ada").total == Decimal("5")


def test_a_closed_stdout_without_a_store_is_a_message_too(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: pytest.TempPathFactory,
) -> None:
    book = tmp_path / "book.json"  # type: ignore[operator]
    book.write_text('{"version": 1, "models": {"m": "input_tokens * 0.001"}}')
    with monkeypatch.context() as patch:
        patch.setattr("sys.stdout", _ClosedPipe())
        code = main(["pricing", "validate", str(book)])
    assert code == EXIT_FAILURE
    assert "output" in capsys.readouterr().err


@pytest.mark.parametrize("amount", ["-1e-3", "-1E-3", "-.001", "-0.001"])
def test_adjust_takes_a_lowering_in_any_decimal_spelling(
    prefix: str, capsys: pytest.CaptureFixture[str], amount: str
) -> None:
    # argparse reads "-1e-3" as an option unless told that such words are
    # numbers: the command said "the following arguments are required:
    # amount" for a lowering by 0.001.
    _budget_call("adjust_usage", "user", "ada", 1)
    code, out, err = _run(capsys, "adjust", "user", "ada", amount, "--json")
    assert code == EXIT_OK, err
    body = json.loads(out)
    assert (body["applied"], body["spent_after"]) == ("-0.001", "0.999")


def test_a_team_charge_and_its_refund_print_the_team_escaped(
    prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # A team id may hold a newline; a team charge's entry id ends with it.
    # Printed raw, it forged a line of output ("FAKE ...") in the text of
    # deduct and refund, where every other id is printed escaped.
    team = "t\nFAKE balance 1000000"
    _budget_call("create_team", team, initial_balance=10)
    _budget_call("add_team_member", team, "ada")
    code, out, _ = _run(capsys, "deduct", "ada", "2", "--team", team)
    assert code == EXIT_OK
    assert not any(line.startswith("FAKE") for line in out.splitlines())
    entry = _budget_call("list_transactions", "ada")[0].entry_id
    code, out, _ = _run(capsys, "refund", entry, "--amount", "1")
    assert code == EXIT_OK
    assert not any(line.startswith("FAKE") for line in out.splitlines())
    assert "team t\\nFAKE balance 1000000: balance 9" in out


@pytest.mark.postgres
def test_transactions_from_postgres_need_no_redis(
    ledger_dsn: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With a DSN and no Redis URL, the command built a manager on the
    # embedded store to read Postgres: a warning that budgets are lost, and
    # exit 2 where the embedded store is not installed (a reporting host).
    monkeypatch.delenv("SPENDGATE_REDIS_URL", raising=False)
    monkeypatch.setenv("SPENDGATE_POSTGRES_DSN", ledger_dsn)
    monkeypatch.setitem(sys.modules, "fakeredis", None)  # (not installed)
    code, out, err = _run(capsys, "transactions", "ada", "--json")
    assert (code, err) == (EXIT_OK, "")
    body = json.loads(out)
    assert (body["source"], body["transactions"]) == ("postgres", [])
    code, _, err = _run(capsys, "transactions", "", "--json")
    assert code == EXIT_USAGE and "user_id" in err  # (the same checks)
