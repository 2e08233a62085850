"""The operator commands for weekly and per-minute caps and the kill switch,
run in process against the real Redis (as ``test_cli``: ``SPENDGATE_*``
variables, a key prefix of the test's own).

How: ``limits set --weekly/--per-minute`` where the deployment counts those
windows (``SPENDGATE_WEEKLY_CAPS`` / ``SPENDGATE_PER_MINUTE_CAPS``), and
refused with exit 2 where it does not; ``usage`` shows the week and the
minute rows and says when a kill switch refuses a scope.
"""

from __future__ import annotations

import json

import pytest

from cli_helpers import _budget_call, _run, prefix
from spendgate import BudgetExceededError
from spendgate.cli import EXIT_OK, EXIT_USAGE

__all__ = ["prefix"]  # (the fixture, shared with test_cli)


def test_limits_set_weekly_and_per_minute(
    prefix: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPENDGATE_WEEKLY_CAPS", "true")
    monkeypatch.setenv("SPENDGATE_PER_MINUTE_CAPS", "true")
    code, out, _ = _run(
        capsys,
        "limits",
        "set",
        "user",
        "alice",
        "--per-minute",
        "0.5",
        "--weekly",
        "30",
    )
    assert code == EXIT_OK
    rows = [line.split() for line in out.splitlines()[1:]]
    assert rows == [
        ["user", "alice", "daily", "10", "default"],
        ["user", "alice", "weekly", "30", "override"],
        ["user", "alice", "monthly", "no", "cap", "default"],
        ["user", "alice", "per-minute", "0.5", "override"],
    ]
    code, out, _ = _run(capsys, "limits", "get", "user", "alice", "--json")
    assert json.loads(out)["per_minute"] == "0.5"
    assert json.loads(out)["weekly"] == "30"
    code, out, _ = _run(capsys, "limits", "set", "user", "alice", "--weekly", "none")
    assert code == EXIT_OK
    assert _budget_call("set_limits", "user", "alice").weekly is None


def test_limits_set_per_minute_where_it_is_off_exits_2(
    prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for option in ("--per-minute", "--weekly"):
        code, _, err = _run(capsys, "limits", "set", "user", "alice", option, "1")
        assert code == EXIT_USAGE
        assert "caps are off" in err
    code, out, _ = _run(capsys, "limits", "get", "user", "alice")
    assert len(out.splitlines()) == 3  # daily and monthly only


def test_usage_shows_the_minute_and_the_kill_switch(
    prefix: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPENDGATE_PER_MINUTE_USER_LIMIT", "1")
    monkeypatch.setenv("SPENDGATE_KILL_SWITCH_SECONDS", "900")
    monkeypatch.setenv("SPENDGATE_ENFORCE_BALANCE", "false")
    _budget_call("record_spend", "alice", "1")
    with pytest.raises(BudgetExceededError, match="minute"):
        _budget_call("check_availability", "alice", None, "0.1")
    code, out, _ = _run(capsys, "usage", "alice")
    assert code == EXIT_OK
    rows = [line.split()[:7] for line in out.splitlines()[1:]]
    assert ["user", "alice", "minute", "1", "0", "1", "0"] in rows
    assert "kill switch: user alice refused until" in out
    code, out, _ = _run(capsys, "usage", "alice", "--json")
    user = json.loads(out)["scopes"]["user"]
    assert user["minute"]["spent"] == "1"
    assert user["kill_switch_until"] is not None
    assert user["weekly"] is None
