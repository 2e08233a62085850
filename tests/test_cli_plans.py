"""``spendgate plans`` and ``spendgate features``, on the real Redis.

Each command runs through ``main`` under a key prefix of the test's own: a
plan is set from options and plans from a bursar file, listed, a user put on
one and shown (text and JSON), a feature checked and used up to its
``deny`` limit (exit 3 past it and for a feature the plan lacks); bad input
exits 2 and sets nothing.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis as SyncRedis

from conftest import REDIS_URL, real_redis_available, service_missing
from plan_helpers import BURSAR_BOOK_WITH_PLANS
from spendgate.cli import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, main


@pytest.fixture
def prefix(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    reason = real_redis_available()
    if reason:
        service_missing("Redis", reason)
    key_prefix = f"clipl{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("SPENDGATE_REDIS_URL", REDIS_URL)
    monkeypatch.setenv("SPENDGATE_KEY_PREFIX", key_prefix)
    yield key_prefix
    client = SyncRedis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{key_prefix}:*", count=1000):
        client.delete(key)
    client.close()


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_plans_from_options_assigned_and_shown(
    prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(
        capsys,
        "plans",
        "set",
        "pro",
        "--name",
        "Pro",
        "--allowance",
        "500",
        "--rate",
        "_default=input_tokens * 0.001",
        "--feature",
        "image_gen=true",
        "--feature",
        "tier=gold",
        "--limit",
        "image_gen=1:monthly:deny",
    )
    assert (code, out) == (EXIT_OK, "plan pro set\n"), err
    code, out, _ = _run(capsys, "plans", "list", "--json")
    (plan,) = json.loads(out)
    assert plan["features"] == {"image_gen": True, "tier": "gold"}
    assert plan["feature_limits"] == {
        "image_gen": {"max_calls": 1, "period": "monthly", "action": "deny"}
    }
    assert plan["free_allowance"] == "500" and plan["source"] == "set_plan"
    code, out, _ = _run(capsys, "plans", "list")
    assert code == EXIT_OK and "pro" in out and "set_plan" in out

    assert _run(capsys, "plans", "show", "ada")[1] == "ada: no plan\n"
    code, out, _ = _run(capsys, "plans", "assign", "ada", "pro")
    assert code == EXIT_OK and "remaining" in out and "500" in out
    code, out, _ = _run(capsys, "plans", "show", "ada", "--json")
    shown = json.loads(out)
    assert shown["plan"]["plan_id"] == "pro"
    assert shown["plan"]["allowance_remaining"] == "500"

    code, out, _ = _run(capsys, "features", "check", "ada", "image_gen", "--json")
    assert json.loads(out)["remaining"] == 1
    assert _run(capsys, "features", "use", "ada", "image_gen")[0] == EXIT_OK
    code, _, err = _run(capsys, "features", "use", "ada", "image_gen")
    assert code == EXIT_REFUSED and "limit reached" in err
    code, _, err = _run(capsys, "features", "use", "ada", "video")
    assert code == EXIT_REFUSED and "does not include" in err
    code, out, _ = _run(capsys, "plans", "unassign", "ada")
    assert (code, out) == (EXIT_OK, "plan removed\n")


def test_plans_from_a_bursar_file(
    prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = tmp_path / "pricing.json"
    book.write_text(json.dumps(BURSAR_BOOK_WITH_PLANS))
    code, out, err = _run(capsys, "plans", "set", "--file", str(book))
    assert (code, out) == (EXIT_OK, "plan free set\nplan pro set\n"), err
    code, out, _ = _run(capsys, "plans", "list", "--json")
    plans = {p["plan_id"]: p for p in json.loads(out)}
    assert plans["free"]["free_allowance"] == "50000"
    assert plans["free"]["rate_overrides"] == {
        "_default": "input_tokens * 0.02 + output_tokens * 0.06"
    }
    yaml_plans = tmp_path / "plans.yaml"
    yaml_plans.write_text(
        "team:\n  name: Team\n  free_allowance: 2.5\n  allowance_period: rolling_30d\n"
    )
    assert _run(capsys, "plans", "set", "--file", str(yaml_plans))[0] == EXIT_OK
    code, out, _ = _run(capsys, "plans", "list", "--json")
    team = next(p for p in json.loads(out) if p["plan_id"] == "team")
    assert team["free_allowance"] == "2.5" and team["period"] == "rolling_30d"


@pytest.mark.parametrize(
    "argv",
    [
        ["plans", "set"],  # neither an id nor --file
        ["plans", "set", "pro", "--allowance", "-5"],
        ["plans", "set", "pro", "--period", "hourly"],
        ["plans", "set", "pro", "--limit", "image_gen=lots"],
        # digits str.isdigit takes and int() does not: a superscript, and
        # more digits than int() converts
        ["plans", "set", "pro", "--feature", "f=1", "--limit", "f=\u00b2"],
        ["plans", "set", "pro", "--feature", "f=1", "--limit", "f=" + "9" * 5000],
        ["plans", "set", "pro", "--limit", "image_gen=1:monthly:explode"],
        ["plans", "set", "pro", "--rate", "nonsense"],
        ["plans", "set", "pro", "--rate", "_default=import os"],
        ["plans", "assign", "ada", "gold"],
    ],
)
def test_bad_input_exits_2_and_sets_nothing(
    prefix: str, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, _, err = _run(capsys, *argv)
    assert code == EXIT_USAGE and err.startswith("spendgate: ")
    assert json.loads(_run(capsys, "plans", "list", "--json")[1]) == []


def test_a_file_with_bursars_billing_fields_is_refused(
    prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plans = tmp_path / "plans.json"
    plans.write_text(json.dumps({"pro": {"name": "Pro", "max_concurrent": 3}}))
    code, _, err = _run(capsys, "plans", "set", "--file", str(plans))
    assert code == EXIT_USAGE and "max_concurrent" in err
    missing = _run(capsys, "plans", "set", "--file", str(tmp_path / "none.json"))
    assert missing[0] == EXIT_USAGE


def test_a_file_with_one_bad_plan_sets_none_of_them(
    prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The first plan is good, the second is refused by bursar's rules: the
    # command exits 2 having set nothing (not the first alone), and says what
    # was wrong with the plan, not with the settings.
    plans = tmp_path / "plans.yaml"
    plans.write_text(
        "basic:\n  name: Basic\n  free_allowance: 5\n"
        "pro:\n  name: Pro\n  rate_overrides:\n    _default: input_tokens ** 2\n"
    )
    code, out, err = _run(capsys, "plans", "set", "--file", str(plans))
    assert (code, out) == (EXIT_USAGE, "")
    assert "plans.pro.rate_overrides._default" in err
    assert "invalid settings" not in err
    assert json.loads(_run(capsys, "plans", "list", "--json")[1]) == []


def test_a_plans_file_not_in_utf8_is_refused_as_a_price_book_is(
    prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # plans set --file reads as pricing set does: a UTF-16 file (PowerShell's
    # default) exits 2 naming the encoding, not with a traceback.
    plans = tmp_path / "plans.json"
    plans.write_bytes(json.dumps({"pro": {"name": "Pro"}}).encode("utf-16"))
    code, out, err = _run(capsys, "plans", "set", "--file", str(plans))
    assert (code, out) == (EXIT_USAGE, "")
    assert "UTF-8" in err
    assert json.loads(_run(capsys, "plans", "list", "--json")[1]) == []
