"""``spendgate pricing``: bursar's price book commands, on the real Redis.

Each command is run through ``main`` under a key prefix of the test's own:
a JSON and a YAML book are published (set), listed with the active one
marked, read back (get/export), compared (diff), switched (activate), and
validated without storing anything; a book that does not load exits 2 with
its error, and so does an unknown version.
"""

from __future__ import annotations

import io
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis as SyncRedis

from conftest import REDIS_URL, real_redis_available, service_missing
from spendgate.cli import EXIT_OK, EXIT_USAGE, main

BOOK = {
    "version": 1,
    "models": {
        "gpt-4": "input_tokens * 0.01 + output_tokens * 0.03",
        "_default": "input_tokens * 0.001 + output_tokens * 0.003",
    },
    "fixed": {"batch_job": 20},
    "min_balance": 5,
}
YAML_BOOK = """\
version: 1
models:
  _default: input_tokens * 0.002 + output_tokens * 0.006
"""


@pytest.fixture
def prefix(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    reason = real_redis_available()
    if reason:
        service_missing("Redis", reason)
    key_prefix = f"clipb{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("SPENDGATE_REDIS_URL", REDIS_URL)
    monkeypatch.setenv("SPENDGATE_KEY_PREFIX", key_prefix)
    yield key_prefix
    client = SyncRedis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{key_prefix}:*", count=1000):
        client.delete(key)
    client.close()


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["pricing", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_whole_cycle(
    prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = tmp_path / "pricing.json"
    book.write_text(json.dumps(BOOK))
    yaml_book = tmp_path / "pricing.yaml"
    yaml_book.write_text(YAML_BOOK)

    assert _run(capsys, "set", str(book), "--label", "deploy-41")[:2] == (
        EXIT_OK,
        "version 1 published and active\n",
    )
    code, out, _ = _run(capsys, "set", str(yaml_book), "--label", "deploy-42")
    assert (code, out) == (EXIT_OK, "version 2 published and active\n")

    code, out, _ = _run(capsys, "list")
    assert code == EXIT_OK
    lines = out.splitlines()
    assert "deploy-41" in lines[-2] and not lines[-2].startswith("*")
    assert lines[-1].startswith("* 2") and "deploy-42" in lines[-1]

    code, out, _ = _run(capsys, "get")
    assert code == EXIT_OK and json.loads(out)["models"]["_default"].startswith(
        "input_tokens * 0.002"
    )
    code, out, _ = _run(capsys, "export", "1")
    assert code == EXIT_OK and json.loads(out)["fixed"] == {"batch_job": 20}

    code, out, _ = _run(capsys, "diff", "1", "2")
    assert code == EXIT_OK
    assert out.startswith("--- version 1\n+++ version 2\n")
    assert '-    "gpt-4"' in out and '"batch_job"' in out

    assert _run(capsys, "activate", "1")[:2] == (EXIT_OK, "version 1 active\n")
    code, out, _ = _run(capsys, "list", "--json")
    assert [(v["version"], v["active"]) for v in json.loads(out)] == [
        (1, True),
        (2, False),
    ]
    code, _, err = _run(capsys, "activate", "9")
    assert code == EXIT_USAGE and "no price book version 9" in err


def test_validate_checks_without_storing(
    prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(YAML_BOOK)
    code, out, _ = _run(capsys, "validate", str(good))
    assert code == EXIT_OK and out.startswith("valid")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": 1, "models": {"_default": "x ** 2"}}))
    code, _, err = _run(capsys, "validate", str(bad))
    assert code == EXIT_USAGE and "x ** 2" in err
    code, _, err = _run(capsys, "set", str(bad))
    assert code == EXIT_USAGE and "invalid price book" in err
    code, _, err = _run(capsys, "get")
    assert code != EXIT_OK and "no price book" in err  # nothing was stored
    code, _, err = _run(capsys, "validate", str(tmp_path / "missing.json"))
    assert code == EXIT_USAGE and "cannot read" in err


def test_validate_shows_every_expression_it_refuses(
    prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bursar book being migrated is fixed in one pass: each expression
    refused (models, tools, search, cache, a plan's rate overrides) is
    shown, with the first other fault, and nothing is stored."""
    book = {
        "version": 1,
        "models": {"gpt-4.1": "input_tokens ** 2", "_default": "abs(input_tokens)"},
        "tools": {"web_search": "this_tool_calls * cost"},
        "search": {"costs": "search_queries.real"},
        "cache": "-cache_read_tokens * 'x'",
        "plans": {
            "free": {
                "id": "free",
                "name": "Free",
                "rate_overrides": {"_default": "input_tokens in output_tokens"},
            }
        },
        "fixed": {"batch_job": -1},
    }
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(book))
    code, out, err = _run(capsys, "validate", str(bad))
    assert code == EXIT_USAGE and out == ""
    for where in (
        "models.gpt-4.1:",
        "models._default:",
        "tools.web_search:",
        "search.costs:",
        "cache:",
        "plans.free.rate_overrides._default:",
        "fixed.batch_job:",
    ):
        assert where in err
    assert len(err.splitlines()) == 7
    code, _, err = _run(capsys, "get")
    assert code != EXIT_OK and "no price book" in err  # nothing was stored


def test_a_book_not_in_utf8_is_refused_as_a_book_and_stdin_reads_bytes(
    prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A file PowerShell wrote (UTF-16) is an invalid book (exit 2, nothing
    stored), not a traceback; a UTF-8 file or stdin with a byte order mark
    loads, as PricingEngine.from_file reads it."""
    utf16 = tmp_path / "book.json"
    utf16.write_bytes(json.dumps(BOOK).encode("utf-16"))
    for action in ("validate", "set"):
        code, _, err = _run(capsys, action, str(utf16))
        assert code == EXIT_USAGE and "UTF-8" in err
    marked = json.dumps(BOOK).encode("utf-8-sig")
    bom = tmp_path / "bom.json"
    bom.write_bytes(marked)
    code, out, _ = _run(capsys, "validate", str(bom))
    assert code == EXIT_OK and out.startswith("valid")
    stdin = io.TextIOWrapper(io.BytesIO(marked), encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", stdin)
    code, out, _ = _run(capsys, "set", "-")
    assert code == EXIT_OK and "version 1" in out
