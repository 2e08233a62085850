"""The CLI's commands that read a Redis Cluster through redis-py's
``RedisCluster`` (``rebucket``, ``events tail``) when it cannot be used:
the documented exit codes and a one-line message, not a traceback.

How: ``cli.main([...])`` in process with ``SPENDGATE_REDIS_CLUSTER=true``
and ``SPENDGATE_REDIS_URL`` naming a port nothing listens on (exit 4,
"unavailable") or the test Redis, which is not a cluster node, or a
database a cluster does not have (exit 2, a settings error, as a
``BudgetManager`` says it: ``ConfigurationError``).
"""

from __future__ import annotations

import pytest

from cli_helpers import _dead_port, _run, prefix
from conftest import REDIS_URL
from spendgate.cli import EXIT_UNAVAILABLE, EXIT_USAGE

__all__ = ["prefix"]  # (the fixture, used by name)

COMMANDS = (("rebucket", "--to", "4", "--dry-run"), ("events", "tail"))


@pytest.mark.parametrize("argv", COMMANDS)
def test_an_unreachable_cluster_exits_4(
    argv: tuple[str, ...],
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SPENDGATE_REDIS_CLUSTER", "true")
    monkeypatch.setenv("SPENDGATE_REDIS_URL", f"redis://127.0.0.1:{_dead_port()}/0")
    code, out, err = _run(capsys, *argv)
    assert code == EXIT_UNAVAILABLE
    assert err.startswith("spendgate: Redis is unavailable") and out == ""


@pytest.mark.parametrize("argv", COMMANDS)
def test_a_node_that_is_not_a_cluster_node_is_a_settings_error(
    argv: tuple[str, ...],
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SPENDGATE_REDIS_CLUSTER", "true")
    monkeypatch.setenv("SPENDGATE_REDIS_URL", REDIS_URL.rsplit("/", 1)[0] + "/0")
    code, out, err = _run(capsys, *argv)
    assert code == EXIT_USAGE
    assert err.startswith("spendgate: invalid settings: redis_cluster=True")
    assert "not a cluster node" in err and out == ""


@pytest.mark.parametrize("argv", COMMANDS)
def test_a_database_other_than_0_is_a_settings_error(
    argv: tuple[str, ...],
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SPENDGATE_REDIS_CLUSTER", "true")
    monkeypatch.setenv("SPENDGATE_REDIS_URL", REDIS_URL.rsplit("/", 1)[0] + "/3")
    code, out, err = _run(capsys, *argv)
    assert code == EXIT_USAGE
    assert err.startswith("spendgate: invalid settings: redis_cluster=True")
    assert "'db'" in err and out == ""
