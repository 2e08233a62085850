"""The operator commands: ``usage``, ``limits get|set|clear``, ``credits add``
(and ``serve``'s checks before it starts), run against the real Redis.

Commands run in process through ``cli.main([...])`` with ``SPENDGATE_*``
pointing at Redis db 9 and a key prefix of the test's own (deleted after);
output is read from captured stdout/stderr, state is checked through a
``BudgetManager`` on the same prefix. One run goes through a real subprocess
to check the entry point and that JSON output parses. Exit codes are the
documented ones: 0 ok, 2 usage or settings (a malformed URL or DSN too), 4
store unavailable (a credit that did not reach Redis too).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from loguru import logger
from redis import Redis as SyncRedis

from conftest import REDIS_URL, real_redis_available, service_missing
from spendgate import BudgetConfig, BudgetManager, SpendRecord
from spendgate.cli import EXIT_FAILURE, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, main


@pytest.fixture
def prefix(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point the CLI at the real Redis under a fresh key prefix."""
    reason = real_redis_available()
    if reason:
        service_missing("Redis", reason)
    key_prefix = f"cli{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("SPENDGATE_REDIS_URL", REDIS_URL)
    monkeypatch.setenv("SPENDGATE_KEY_PREFIX", key_prefix)
    monkeypatch.setenv("SPENDGATE_DAILY_USER_LIMIT", "10")
    monkeypatch.setenv("SPENDGATE_ENFORCE_BALANCE", "true")
    yield key_prefix
    client = SyncRedis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{key_prefix}:*", count=1000):
        client.delete(key)
    client.close()


def _budget_call(method: str, *args: Any, **kwargs: Any) -> Any:
    """Call a BudgetManager method on the CLI's Redis and prefix (from the env)."""

    async def go() -> Any:
        async with BudgetManager(BudgetConfig()) as budget:
            return await getattr(budget, method)(*args, **kwargs)

    return asyncio.run(go())


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


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


# -- environment and outages -------------------------------------------------------


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_redis_exits_4(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SPENDGATE_REDIS_URL", f"redis://127.0.0.1:{_dead_port()}/0")
    for argv in (["usage", "alice"], ["limits", "get", "user", "alice"]):
        code, _, err = _run(capsys, *argv)
        assert code == EXIT_UNAVAILABLE
        assert "unavailable" in err


def test_operator_commands_need_a_redis_url(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "usage", "alice")
    assert code == EXIT_USAGE
    assert "SPENDGATE_REDIS_URL" in err


def test_invalid_settings_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SPENDGATE_REDIS_URL", REDIS_URL)
    monkeypatch.setenv("SPENDGATE_KEY_PREFIX", "not a prefix!")
    code, _, err = _run(capsys, "usage", "alice")
    assert code == EXIT_USAGE
    assert "key_prefix" in err


def test_a_malformed_redis_url_is_a_settings_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Exited 1 ("failure") before the exit codes came from the one error table.
    for url in ("redis://127.0.0.1:notaport/0", "http://127.0.0.1:6379/0"):
        monkeypatch.setenv("SPENDGATE_REDIS_URL", url)
        code, out, err = _run(capsys, "credits", "add", "alice", "1")
        assert code == EXIT_USAGE
        assert "invalid redis_url" in err and out == ""


def test_credits_add_on_an_unreachable_redis_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    # It used to spool the credit in the home directory, print "spooled" and
    # exit 0: an operator command that did not reach the store must say so.
    monkeypatch.setenv("SPENDGATE_REDIS_URL", f"redis://127.0.0.1:{_dead_port()}/0")
    monkeypatch.setenv("SPENDGATE_SPOOL_PATH", str(tmp_path / "spool"))
    for extra in ([], ["--json"]):
        code, out, err = _run(capsys, "credits", "add", "ada", "5", *extra)
        assert code == EXIT_UNAVAILABLE
        assert out == "" and "spooled" not in err
        assert "unavailable" in err
    spooled = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert spooled == []


def test_a_credit_spooled_after_all_exits_4(
    prefix: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Redis answered the ping, then not the credit: the manager spooled it.
    async def spooled(self: BudgetManager, user: str, amount: str, **_: Any) -> Any:
        return SpendRecord(
            entry_id="e1",
            kind="credit",
            user_id=user,
            project_id=None,
            amount_micros=5_000_000,
            model=None,
            occurred_ms=0,
            spooled=True,
        )

    monkeypatch.setattr(BudgetManager, "add_credits", spooled)
    code, out, err = _run(capsys, "credits", "add", "ada", "5")
    assert code == EXIT_UNAVAILABLE
    assert out == ""
    assert "spooled in" in err and "--idempotency-key" in err and "e1" in err
    code, out, err = _run(capsys, "credits", "add", "ada", "5", "--json")
    assert code == EXIT_UNAVAILABLE
    assert json.loads(out)["spooled"] is True


@pytest.mark.parametrize("amount", ["0", "0.0000009", "0e5"])
def test_a_credit_of_nothing_is_refused(
    prefix: str, capsys: pytest.CaptureFixture[str], amount: str
) -> None:
    code, out, err = _run(capsys, "credits", "add", "ada", amount)
    assert code == EXIT_USAGE
    assert "invalid amount" in err and "at least 0.000001" in err
    assert out == ""
    assert _budget_call("get_usage", "ada")["user"].balance == 0


def test_global_limits_take_no_id(
    prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, "limits", "get", "global", "extra")
    assert code == EXIT_USAGE
    assert "global takes no id" in err and out == ""
    code, _, err = _run(capsys, "limits", "set", "global", "x", "--daily", "7")
    assert code == EXIT_USAGE
    assert _budget_call("set_limits", "global").overridden == frozenset()


def test_reconcile_names_the_day_it_cannot_read(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["reconcile", "--day", "2026-13-45"])
    assert exit_info.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "'2026-13-45' is not a calendar day: YYYY-MM-DD" in err
    assert "fromisoformat" not in err


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://postgres@127.0.0.1:notaport/x",
        "host=127.0.0.1 port=5432 user=postgres",
        "mysql://127.0.0.1/x",
    ],
)
def test_a_malformed_dsn_is_a_settings_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], dsn: str
) -> None:
    # It exited 4 ("unavailable"), or with a traceback, before; and flush
    # made its consumer group (and so the stream) before it read the DSN.
    prefix = f"sgbaddsn{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("SPENDGATE_POSTGRES_DSN", dsn)
    monkeypatch.setenv("SPENDGATE_REDIS_URL", REDIS_URL)
    monkeypatch.setenv("SPENDGATE_KEY_PREFIX", prefix)
    for argv in (["migrate"], ["report", "stats"], ["flush", "--once"]):
        code, _, err = _run(capsys, *argv)
        assert code == EXIT_USAGE, argv
        assert "invalid settings: invalid Postgres DSN" in err
    with SyncRedis.from_url(REDIS_URL) as redis:
        assert redis.keys(f"{prefix}:*") == []  # nothing written


def test_a_malformed_redis_url_is_refused_by_the_ledger_commands(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # flush and reconcile build their own Redis client: a traceback before.
    monkeypatch.setenv("SPENDGATE_POSTGRES_DSN", "postgresql://postgres@127.0.0.1/x")
    monkeypatch.setenv("SPENDGATE_REDIS_URL", "redis://127.0.0.1:notaport/0")
    for argv in (["flush", "--once"], ["reconcile"]):
        code, _, err = _run(capsys, *argv)
        assert code == EXIT_USAGE, argv
        assert "invalid redis_url" in err


def test_serve_checks_before_starting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, "serve")
    assert code == EXIT_USAGE
    assert "SPENDGATE_API_KEYS" in err
    monkeypatch.setenv("SPENDGATE_API_KEYS", "k")
    code, _, err = _run(capsys, "serve")
    assert code == EXIT_USAGE  # never the embedded store unless asked for
    assert "SPENDGATE_REDIS_URL" in err and "--embedded" in err
    code, _, err = _run(capsys, "serve", "--embedded", "--workers", "2")
    assert code == EXIT_USAGE  # the embedded store cannot be shared by workers
    assert "SPENDGATE_REDIS_URL" in err
    code, _, err = _run(capsys, "serve", "--port", "70000")
    assert code == EXIT_USAGE


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


# -- logging ---------------------------------------------------------------------


def _python(code: str, env: dict[str, str] | None = None) -> str:
    """Run ``code`` in a fresh interpreter; its stderr."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stderr


def test_the_library_is_quiet_until_the_application_enables_it() -> None:
    # A store that does not answer: a warning, and DEBUG lines from the spool,
    # which loguru's default handler printed from any application.
    code = (
        "import asyncio, spendgate\n"
        "{enable}\n"
        "async def go():\n"
        "    config = spendgate.BudgetConfig(redis_url='redis://127.0.0.1:1/0')\n"
        "    async with spendgate.BudgetManager(config) as budget:\n"
        "        try:\n"
        "            await budget.check_availability('u', None, 1)\n"
        "        except spendgate.BudgetUnavailableError:\n"
        "            pass\n"
        "asyncio.run(go())\n"
    )
    assert _python(code.format(enable="")) == ""
    enabled = "from loguru import logger; logger.enable('spendgate')"
    assert "budget store unreachable" in _python(code.format(enable=enabled))


def test_data_commands_print_data_not_info_lines(prefix: str) -> None:
    def usage(*options: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "spendgate.cli", *options, "usage", "bob"],
            env=dict(os.environ),
            capture_output=True,
            text=True,
            timeout=60,
        )

    quiet = usage()
    assert quiet.returncode == EXIT_OK
    assert quiet.stderr == ""
    loud = usage("--log-level", "info")
    assert loud.returncode == EXIT_OK
    assert "INFO" in loud.stderr and "using Redis at" in loud.stderr


def _serve_log(prefix: str, *options: str) -> str:
    """Start ``spendgate serve`` with ``options``, wait for /health, stop it
    with SIGTERM; everything it printed."""
    import signal
    import time

    import httpx

    port = _dead_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "spendgate.cli", "serve", "--port", str(port), *options],
        env={**os.environ, "SPENDGATE_API_KEYS": ""},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert proc.poll() is None, "spendgate serve did not start"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    return out


@pytest.mark.slow
def test_serve_logs_at_the_level_asked(prefix: str) -> None:
    quiet = _serve_log(prefix, "--insecure-no-auth", "--log-level", "error")
    for level in ("DEBUG", "INFO", "WARNING"):
        assert level not in quiet, quiet
    assert "using Redis at" not in quiet
    # The default, info, in two worker processes: each enables spendgate's
    # lines (the warning is the server's, logged in the worker).
    default = _serve_log(prefix, "--insecure-no-auth", "--workers", "2")
    assert default.count("authentication is DISABLED") == 2, default
    assert "using Redis at" in default and "DEBUG" not in default


def test_entry_point_in_a_subprocess(prefix: str) -> None:
    env = dict(os.environ)  # holds the fixture's SPENDGATE_* settings
    result = subprocess.run(
        [sys.executable, "-m", "spendgate.cli", "usage", "bob", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == EXIT_OK, result.stderr
    body = json.loads(result.stdout)
    assert body["user_id"] == "bob"
    assert body["scopes"]["user"]["daily"]["limit"] == "10"


def test_log_path_also_gets_the_log_lines(
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """coreason's LOG_PATH (and log_path): the command's lines go there too."""
    log = tmp_path / "budget.log"
    monkeypatch.setenv("COREASON_BUDGET_LOG_PATH", str(log))
    from spendgate.cli import logs

    try:
        code, _, _ = _run(capsys, "--log-level", "info", "usage", "ada")
        assert code == EXIT_OK
        assert "using Redis at" in log.read_text()
    finally:
        for handler in logs._handlers:
            logger.remove(handler)
        logs._handlers.clear()
