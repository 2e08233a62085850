"""The CLI's environment: settings, an unreachable store, ``serve``'s checks
before it starts, and logging, run against the real Redis.

Commands run in process through ``cli.main([...])`` (the ``prefix`` fixture
of tests/cli_helpers.py where a Redis is needed), or in a real subprocess to
check the entry point, that JSON output parses and what is logged. Exit
codes are the documented ones: 2 for usage or settings (a missing Redis URL,
a bad key prefix, a malformed URL or DSN, a day that is not a calendar day,
``serve`` without API keys or with the embedded store for two workers), 4
for a store unavailable (a credit that did not reach Redis too, which leaves
nothing spooled on disk). The library logs nothing until the application
enables it; data commands print data, not info lines, unless asked;
``serve`` logs at the level asked, in each worker; ``LOG_PATH`` gets the
lines too.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from loguru import logger
from redis import Redis as SyncRedis

from cli_helpers import _dead_port, _run, prefix
from conftest import POSTGRES_DSN, REDIS_URL, service_missing
from spendgate import BudgetManager, SpendRecord
from spendgate.cli import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, main

__all__ = ["prefix"]  # (the fixture, used by name)


# -- environment and outages -------------------------------------------------------


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


@pytest.mark.parametrize("missing", ["database", "role"])
def test_a_dsn_naming_what_postgres_lacks_is_a_settings_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], missing: str
) -> None:
    # Postgres answers, and says the database or the role named does not
    # exist: the settings are wrong (exit 2), not the program (it was exit 1,
    # "failure"), nor the server away (4).
    asyncio.run(_postgres_answers())
    name = f"sgmissing{uuid.uuid4().hex[:8]}"
    dsn = urlsplit(POSTGRES_DSN)
    if missing == "database":
        dsn = dsn._replace(path=f"/{name}")
    else:
        dsn = dsn._replace(netloc=f"{name}@{dsn.hostname}:{dsn.port or 5432}")
    monkeypatch.setenv("SPENDGATE_POSTGRES_DSN", urlunsplit(dsn))
    for argv in (["migrate"], ["report", "stats"], ["transactions", "ada"]):
        code, out, err = _run(capsys, *argv)
        assert (code, out) == (EXIT_USAGE, ""), argv
        assert "spendgate: invalid settings: the Postgres DSN" in err
        assert name in err


async def _postgres_answers() -> None:
    import asyncpg

    try:
        connection = await asyncpg.connect(POSTGRES_DSN, timeout=5)
    except Exception as exc:  # (down: fails, or skips outside CI, as pg_dsn)
        service_missing("PostgreSQL", f"{type(exc).__name__}: {exc}")
        raise
    await connection.close()


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
    # A malformed Redis URL, as every command refuses it: exit 2 before
    # uvicorn starts (it was exit 1, the app's start-up failing on it).
    monkeypatch.setenv("SPENDGATE_REDIS_URL", "redis-host:6379")
    code, _, err = _run(capsys, "serve", "--port", str(_dead_port()))
    assert code == EXIT_USAGE
    assert "invalid settings: invalid redis_url" in err


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


@pytest.mark.parametrize("where", ["a directory", "under a file"])
def test_a_log_path_that_cannot_be_written_is_a_settings_error(
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    where: str,
) -> None:
    """A LOG_PATH nobody can write to is exit 2 naming it, not a traceback."""
    (tmp_path / "file").write_text("")
    path = tmp_path if where == "a directory" else tmp_path / "file" / "budget.log"
    monkeypatch.setenv("COREASON_BUDGET_LOG_PATH", str(path))
    from spendgate.cli import logs

    try:
        code, out, err = _run(capsys, "usage", "ada")
        assert (code, out) == (EXIT_USAGE, "")
        assert (
            err.startswith("spendgate: invalid settings: log_path") and str(path) in err
        )
    finally:
        for handler in logs._handlers:
            logger.remove(handler)
        logs._handlers.clear()
