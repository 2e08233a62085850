"""The operator commands: ``--help`` on every command, ``usage``, ``limits
get|set|clear``, ``credits add`` and ``demo``, run against the real Redis.

Commands run in process through ``cli.main([...])`` with ``SPENDGATE_*``
pointing at Redis db 9 and a key prefix of the test's own (deleted after;
the ``prefix`` fixture, in tests/cli_helpers.py); output is read from
captured stdout/stderr, state is checked through a ``BudgetManager`` on the
same prefix. Checked: the output (tables, ``--json``, control characters
escaped), the state each command leaves, and the exit codes: 0 ok, 2 for a
bad amount, id or argument. The demo runs twice on the embedded store and
on Redis and leaves no key behind; without the embedded store installed it
prints a hint. Settings, outages, logging and the subprocess runs are in
tests/test_cli_environment.py.
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal

import pytest
from redis import Redis as SyncRedis

from cli_helpers import _budget_call, _dead_port, _run, prefix
from conftest import REDIS_URL
from spendgate.cli import EXIT_FAILURE, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, main

__all__ = ["prefix"]  # (the fixture, used by name)


# -- help ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["serve"],
        ["usage"],
        ["limits"],
        ["limits", "get"],
        ["limits", "set"],
        ["limits", "clear"],
        ["credits"],
        ["credits", "add"],
        ["credits", "sweep"],
        ["balance"],
        ["refund"],
    ],
    ids=lambda argv: " ".join(argv) or "top",
)
def test_every_command_has_help(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: spendgate")
    if argv:
        assert argv[-1] in out


def test_top_level_help_lists_the_operator_commands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("serve", "usage", "limits", "credits", "balance", "refund"):
        assert command in out


def test_bench_is_not_a_product_command(capsys: pytest.CaptureFixture[str]) -> None:
    # The quick benchmark lives in the checkout's bench/ (python -m bench.quick).
    with pytest.raises(SystemExit) as exit_info:
        main(["bench"])
    assert exit_info.value.code == EXIT_USAGE
    assert "invalid choice: 'bench'" in capsys.readouterr().err


def test_json_is_ascii_and_tables_escape_controls(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # One rule for every command: JSON never carries a raw non-ASCII character
    # (a lone surrogate could not even be encoded), and a table cell never a
    # control character (C1 included), yet the JSON parses back to the text.
    from datetime import date
    from decimal import Decimal

    from spendgate.cli.printer import print_json, print_table

    hostile = "caf\u00e9\u202e\x9b\udfff\n"
    print_json({"id": hostile, "amount": Decimal("0.10"), "day": date(2026, 3, 15)})
    out = capsys.readouterr().out
    assert out.isascii()
    assert json.loads(out) == {"id": hostile, "amount": "0.10", "day": "2026-03-15"}
    print_table(["id", "total"], [[hostile, Decimal(1)], ["x", 2]])
    out = capsys.readouterr().out
    assert "\\x9b" in out and "\\n" in out and "\x9b" not in out
    assert len(out.splitlines()) == 3


# -- credits ---------------------------------------------------------------------


def test_credits_add(prefix: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "credits", "add", "alice", "25.5")
    assert code == EXIT_OK
    assert "added 25.5 USD: balance of alice 25.5" in out
    code, out, _ = _run(
        capsys, "credits", "add", "alice", "0.5", "--idempotency-key", "t1", "--json"
    )
    assert code == EXIT_OK
    body = json.loads(out)
    assert (body["amount"], body["balance"], body["replayed"]) == ("0.5", "26", False)
    code, out, _ = _run(
        capsys, "credits", "add", "alice", "0.5", "--idempotency-key", "t1", "--json"
    )
    assert json.loads(out)["replayed"] is True
    usage = _budget_call("get_usage", "alice")
    assert usage["user"].balance == Decimal(26)


@pytest.mark.parametrize("amount", ["-1", "abc", "NaN", "1e12"])
def test_credits_add_rejects_bad_amounts(
    prefix: str, capsys: pytest.CaptureFixture[str], amount: str
) -> None:
    code, out, err = _run(capsys, "credits", "add", "alice", amount)
    assert code == EXIT_USAGE
    assert "invalid amount" in err
    assert out == ""
    assert _budget_call("get_usage", "alice")["user"].balance == 0


def test_credits_add_idempotency_conflict_is_a_usage_error(
    prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(capsys, "credits", "add", "u", "1", "--idempotency-key", "k")[0] == 0
    code, _, err = _run(capsys, "credits", "add", "u", "2", "--idempotency-key", "k")
    assert code == EXIT_USAGE
    assert "idempotency key" in err


@pytest.mark.parametrize("amount", ["0", "0.0000009", "0e5"])
def test_a_credit_of_nothing_is_refused(
    prefix: str, capsys: pytest.CaptureFixture[str], amount: str
) -> None:
    code, out, err = _run(capsys, "credits", "add", "ada", amount)
    assert code == EXIT_USAGE
    assert "invalid amount" in err and "at least 0.000001" in err
    assert out == ""
    assert _budget_call("get_usage", "ada")["user"].balance == 0


# -- limits ----------------------------------------------------------------------


def test_limits_set_get_clear(prefix: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "limits", "get", "user", "alice", "--json")
    assert code == EXIT_OK
    assert json.loads(out) == {
        "scope": "user",
        "scope_id": "alice",
        "daily": "10",
        "weekly": None,
        "monthly": None,
        "per_minute": None,
        "overridden": [],
        "model": None,  # (the scope's own caps, not a model's)
        "action": None,
        "thresholds": [],
    }
    code, out, _ = _run(
        capsys, "limits", "set", "user", "alice", "--daily", "2.5", "--monthly", "40"
    )
    assert code == EXIT_OK
    lines = out.splitlines()
    assert lines[0].split() == ["scope", "id", "window", "limit", "source"]
    assert lines[1].split() == ["user", "alice", "daily", "2.5", "override"]
    assert lines[2].split() == ["user", "alice", "monthly", "40", "override"]
    limits = _budget_call("set_limits", "user", "alice")
    assert (limits.daily, limits.monthly) == (Decimal("2.5"), Decimal(40))

    code, out, _ = _run(capsys, "limits", "set", "user", "alice", "--daily", "none")
    assert code == EXIT_OK
    assert _budget_call("set_limits", "user", "alice").daily is None

    code, out, _ = _run(capsys, "limits", "clear", "user", "alice", "--json")
    assert code == EXIT_OK
    assert json.loads(out)["overridden"] == []
    assert json.loads(out)["daily"] == "10"


def test_limits_on_global_and_projects(
    prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "limits", "set", "global", "--daily", "1000", "--json")
    assert code == EXIT_OK
    assert json.loads(out)["scope_id"] is None
    assert _budget_call("set_limits", "global").daily == Decimal(1000)
    code, out, _ = _run(capsys, "limits", "set", "project", "p1", "--monthly", "5")
    assert code == EXIT_OK
    assert _budget_call("set_limits", "project", "p1").monthly == Decimal(5)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["limits", "get", "user"], "an id is needed"),
        (["limits", "set", "user", "alice"], "--daily"),
        (["limits", "set", "user", "alice", "--daily", "-5"], "invalid amount"),
        (["limits", "set", "user", "alice", "--daily", "x"], "invalid amount"),
        (["usage", " "], "invalid user_id"),
    ],
)
def test_usage_errors_exit_2(
    prefix: str, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, _, err = _run(capsys, *argv)
    assert code == EXIT_USAGE
    assert message in err


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["limits", "get", "team", "x"])
    assert exit_info.value.code == EXIT_USAGE
    with pytest.raises(SystemExit) as exit_info:
        main(["credits", "add", "alice"])
    assert exit_info.value.code == EXIT_USAGE


def test_global_limits_take_no_id(
    prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, "limits", "get", "global", "extra")
    assert code == EXIT_USAGE
    assert "global takes no id" in err and out == ""
    code, _, err = _run(capsys, "limits", "set", "global", "x", "--daily", "7")
    assert code == EXIT_USAGE
    assert _budget_call("set_limits", "global").overridden == frozenset()


# -- usage -----------------------------------------------------------------------


def test_usage_table_and_json(prefix: str, capsys: pytest.CaptureFixture[str]) -> None:
    _budget_call("record_spend", "alice", "1.25", project_id="p1")
    _budget_call("add_credits", "alice", "5")
    code, out, _ = _run(capsys, "usage", "alice", "--project", "p1")
    assert code == EXIT_OK
    lines = out.splitlines()
    assert lines[0].split() == [
        "scope",
        "id",
        "window",
        "spent",
        "held",
        "limit",
        "remaining",
        "resets",
    ]
    rows = [line.split()[:7] for line in lines[1:7]]
    assert rows[0] == ["user", "alice", "daily", "1.25", "0", "10", "8.75"]
    assert rows[1][:5] == ["user", "alice", "monthly", "1.25", "0"]
    assert rows[2][:4] == ["project", "p1", "daily", "1.25"]
    assert rows[4][:4] == ["global", "-", "daily", "1.25"]
    assert "balance of user alice: 3.75 USD" in out

    code, out, _ = _run(capsys, "usage", "alice", "--json")
    assert code == EXIT_OK
    body = json.loads(out)
    assert set(body["scopes"]) == {"user", "global"}
    assert body["scopes"]["user"]["daily"]["remaining"] == "8.75"
    assert body["scopes"]["user"]["balance"] == "3.75"


def test_table_escapes_control_characters(
    prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "usage", "evil\nuser")
    assert code == EXIT_OK
    assert "evil\\nuser" in out
    assert len(out.splitlines()) == 6  # header, 4 rows, the balance line


# -- demo ------------------------------------------------------------------------


def _demo_keys() -> list[bytes]:
    client = SyncRedis.from_url(REDIS_URL)
    try:
        return list(client.scan_iter(match="spendgate-demo-*", count=1000))
    finally:
        client.close()


def test_demo_ignores_the_deployment_settings(
    prefix: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The ledger section has users export SPENDGATE_REDIS_URL; the fixture
    # exports a balance to enforce too, which would refuse Ada at step 1.
    import spendgate.core.connection as connection

    monkeypatch.setattr(connection, "_embedded_server", None)
    for _ in range(2):  # re-runnable, in one process (one embedded store) too
        code, out, err = _run(capsys, "demo")
        assert code == EXIT_OK, err
        assert out.startswith("spendgate demo on the embedded in-process store")
        assert "remaining today: 0.076543 USD" in out
    assert _demo_keys() == []


def test_demo_on_redis_runs_again_and_leaves_nothing(
    prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(2):  # the second run crashed: the first one's spend stayed
        code, out, err = _run(capsys, "demo", "--redis-url", REDIS_URL)
        assert code == EXIT_OK, err
        assert out.startswith(f"spendgate demo on Redis at {REDIS_URL}")
        assert "replayed entry" in out
    assert _demo_keys() == []
    code, _, err = _run(
        capsys, "demo", "--redis-url", f"redis://127.0.0.1:{_dead_port()}/0"
    )
    assert code == EXIT_UNAVAILABLE
    assert len(err.splitlines()) == 1 and "unavailable" in err


def test_demo_without_the_embedded_store_prints_a_hint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import spendgate.core.connection as connection

    # A core-only install: importing fakeredis fails.
    monkeypatch.setitem(sys.modules, "fakeredis", None)
    monkeypatch.setattr(connection, "_embedded_server", None)
    code, out, err = _run(capsys, "demo")
    assert code == EXIT_FAILURE
    assert out == ""
    assert err.count("\n") == 1
    assert "pip install 'spendgate[embedded]'" in err
