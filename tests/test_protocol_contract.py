"""Python and the Lua scripts agree on the protocol (spendgate.core.protocol).

Read statically: every constant a script names is one Python hands it; each
script answers exactly the reply codes its Operation declares, and its
header documents exactly the operation's KEYS and ARGV. Every window code
has a name, and an operation's arguments by name and by position round-trip.
That every reply code is decoded at run time is tests/test_protocol_replies.py's.
"""

from __future__ import annotations

import re
from typing import get_args

import pytest

from spendgate.core.hooks import HOOKS
from spendgate.core.operations import OPERATIONS, named_args, positional_args
from spendgate.core.protocol import WINDOW_NAMES, Reply, WindowCode, WindowName
from spendgate.core.scripts import (
    LIBRARIES,
    PROTOCOL_CONSTANTS,
    SCRIPT_CONSTANTS,
    configured_source,
    lua_dir,
    script_source,
)
from spendgate.errors import Window

#: a constant a script may name: one of Python's, never a stray global
_CONSTANT = re.compile(
    rb"\b(?:[RWFKS]|HOLD|KIND|WN|SN|EV|EF|CA|CAN)_[A-Z_]+\b"
    rb"|\b(?:NO_CAP|LIMIT_[A-Z]+|THRESHOLD_SCALE)\b"
)
_REPLY = re.compile(rb"\bR_([A-Z_]+)\b")
_HEADER_ARG = re.compile(rb"\bARGV\[(\d+)(?:\.\.(\d+))?\]")
_HEADER_KEY = re.compile(rb"\bKEYS\[(\d+)\]")


def _without_comments(source: bytes) -> bytes:
    return re.sub(rb"--[^\n]*", b"", source)


@pytest.mark.parametrize("hooked", [False, True], ids=["plain", "hooks"])
@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_every_constant_a_script_names_is_handed_to_it(
    operation: str, hooked: bool
) -> None:
    # (with every hook's lines too: spendgate.core.hooks.HOOKS)
    hooks = frozenset(HOOKS) if hooked else frozenset()
    code = _without_comments(script_source(operation, LIBRARIES, hooks))
    named = {m.decode() for m in _CONSTANT.findall(code)}
    unknown = named - set(PROTOCOL_CONSTANTS) - set(SCRIPT_CONSTANTS)
    assert not unknown, f"{operation}.lua names constants Python never sends: {unknown}"
    # ... and each one it names is written in as its value when configured
    constants = {name: "0" for name in SCRIPT_CONSTANTS}
    if hooked:
        constants.update(CAP_ACTIONS="1", LOW_BALANCE="5")
    configured = configured_source(operation, constants)
    left = {m.decode() for m in _CONSTANT.findall(configured)}
    assert not named & left, f"{operation}: {named & left} not written in"


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_each_script_answers_exactly_its_declared_replies(operation: str) -> None:
    code = _without_comments(script_source(operation))
    answered = {Reply[m.decode()] for m in _REPLY.findall(code)}
    assert answered == set(OPERATIONS[operation].replies)


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_each_script_header_documents_its_keys_and_args(operation: str) -> None:
    header = (lua_dir() / f"{operation}.lua").read_bytes().split(b"\n\n")[0]
    args: set[int] = set()
    for first, last in _HEADER_ARG.findall(header):
        args.update(range(int(first), int(last or first) + 1))
    keys = {int(k) for k in _HEADER_KEY.findall(header)}
    op = OPERATIONS[operation]
    assert args == set(range(1, len(op.args) + len(op.hooked) + 1))
    assert keys == set(range(1, len(op.keys) + 1))


def test_every_window_code_has_a_name() -> None:
    assert set(WINDOW_NAMES) == set(WindowCode)
    assert set(WINDOW_NAMES.values()) == set(get_args(Window))
    assert set(get_args(WindowName)) == set(get_args(Window))


def test_named_and_positional_arguments_round_trip() -> None:
    for name, op in OPERATIONS.items():
        args = tuple(f"v{i}" for i in range(len(op.args)))
        assert positional_args(name, named_args(name, args)) == args
    with pytest.raises(ValueError):
        named_args("record", ("too", "few"))
    with pytest.raises(ValueError):
        positional_args("release", {"lease": "x", "extra": "y"})
