"""``spendgate teams ...`` on the real Redis: make, show, members, credit.

How: ``test_cli``'s ``prefix`` fixture points the CLI at the real Redis under
a fresh key prefix; each command runs in process (``main``), its exit code
and output (text and ``--json``) are checked, and a charge made with the
Python API between the commands shows in ``teams show``.
"""

from __future__ import annotations

import json

import pytest

from cli_helpers import _budget_call, _run, prefix
from spendgate.cli import EXIT_OK, EXIT_REFUSED, EXIT_USAGE

__all__ = ["prefix"]  # (the fixture, used by name)


def test_teams_commands(prefix: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        capsys, "teams", "create", "eng", "--name", "Eng", "--initial-balance", "20"
    )
    assert code == EXIT_OK and "created team eng: balance 20" in out
    code, _, err = _run(capsys, "teams", "create", "eng")
    assert code == EXIT_USAGE and "exists" in err
    code, out, _ = _run(
        capsys, "teams", "add-member", "eng", "ada", "--daily-cap", "5", "--json"
    )
    assert code == EXIT_OK and json.loads(out)["status"] == "added"
    code, out, _ = _run(capsys, "teams", "credit", "eng", "2.5", "--json")
    assert code == EXIT_OK and json.loads(out)["balance"] == "22.5"
    _budget_call("record_spend", "ada", 2, team_id="eng")
    code, out, _ = _run(capsys, "teams", "show", "eng", "--json")
    shown = json.loads(out)
    assert (shown["balance"], shown["members"][0]["spent_today"]) == ("20.5", "2")
    assert shown["members"][0]["daily_cap"] == "5"
    code, out, _ = _run(capsys, "teams", "show", "eng")
    assert code == EXIT_OK and "balance 20.5" in out and "ada" in out
    code, out, _ = _run(capsys, "teams", "remove-member", "eng", "ada")
    assert code == EXIT_OK and "removed ada" in out
    code, _, err = _run(capsys, "teams", "remove-member", "eng", "ada")
    assert code == EXIT_REFUSED and "not a member" in err
    code, _, err = _run(capsys, "teams", "show", "nope")
    assert code == EXIT_USAGE and "no team" in err
