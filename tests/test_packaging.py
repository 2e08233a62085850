"""Packaging: a built wheel carries every Lua script; an editable install and
a plain import find them; importing spendgate pulls in none of the extras."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from spendgate.core.hooks import with_hooks
from spendgate.core.scripts import (
    LIBRARIES,
    SCRIPT_CONSTANTS,
    SCRIPT_NAMES,
    configured_source,
    lua_dir,
    script_source,
)

ROOT = Path(__file__).resolve().parents[1]


def test_checkout_finds_every_script() -> None:
    folder = lua_dir()
    for name in SCRIPT_NAMES:
        assert (folder / f"{name}.lua").is_file()
        source = script_source(name)
        # (the lines of hooks that are off gone: spendgate.core.hooks.HOOKS)
        body = with_hooks((folder / f"{name}.lua").read_bytes(), frozenset())
        assert source.endswith(body)
        assert b"-- KEYS[1]" in source  # the contract header is there
    # Only the helpers a script uses are linked in, with what they use.
    record = script_source("record")
    for helper in (b"charge", b"count", b"idem_claim", b"idem_answer"):
        assert b"local function " + helper + b"(" in record  # count: by charge
    for helper in (b"admit", b"purge_expired_holds", b"idem_store", b"scope_keys"):
        assert b"local function " + helper + b"(" not in record
    assert b"local function admit(" in script_source("check")
    # usage -> purge_expired_holds -> remove_held
    assert b"local function remove_held(" in script_source("usage")


def test_configured_scripts_have_every_constant_written_in() -> None:
    constants = {name: f"v{i}x" for i, name in enumerate(SCRIPT_CONSTANTS)}
    for name in SCRIPT_NAMES:
        source = configured_source(name, constants)
        code = re.sub(rb"--[^\n]*", b"", script_source(name))
        for constant in SCRIPT_CONSTANTS:
            assert not re.search(rb"\b" + constant.encode() + rb"\b", source)
            if re.search(rb"\b" + constant.encode() + rb"\b", code):
                assert constants[constant].encode() in source
    # Each configuration is its own script.
    other = {**constants, "USER_DAILY": "5"}
    assert configured_source("check", other) != configured_source("check", constants)
    for wrong in (
        {k: v for k, v in constants.items() if k != "BASE"},
        {**constants, "EXTRA": "1"},
    ):
        with pytest.raises(ValueError, match="BASE"):
            configured_source("check", wrong)


def test_wheel_ships_every_script(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("spendgate-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in (*SCRIPT_NAMES, *LIBRARIES):
        assert f"spendgate/lua/{name}.lua" in names
    assert "spendgate/py.typed" in names

    # Installed from the wheel (no checkout on the path), the scripts are found.
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    probe = (
        "import spendgate.core.scripts as s; d = s.lua_dir(); "
        "print(d); assert all((d / f'{n}.lua').is_file() for n in s.SCRIPT_NAMES)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    )
    assert str(target) in out.stdout


def test_import_pulls_in_no_extras() -> None:
    probe = (
        "import sys, spendgate; "
        "bad = [m for m in ('litellm', 'fastapi', 'asyncpg', 'uvicorn', 'fakeredis') "
        "if m in sys.modules]; print(bad); assert not bad"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True)
