"""The scripts' optional hooks: how a feature that is off leaves the
scripts of ``lua/`` untouched (:mod:`spendgate.core.scripts` links them)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from spendgate.core import protocol

__all__ = ["HOOKS", "hooks_on", "with_hooks"]

#: the optional hooks of the scripts, the one way a feature that is off
#: leaves them untouched: a line of ``lua/`` that ends in ``--@<hook>`` (or
#: ``-- @<hook>``) is linked in only when the hook is on, one that ends in
#: ``--@!<hook>`` only when it is off (the line it replaces). Off, the tagged
#: lines are gone, newline and all: a deployment that configures none of
#: them runs, byte for byte, the scripts it ran before the hooks existed
#: (``tests/test_cap_actions_spool.py`` checks it). Each hook is on by its
#: constant (:func:`hooks_on`); a new one is named here and there, and a
#: tag naming no hook fails the loading. ``cap_actions`` (``CAP_ACTIONS``
#: "1": cap actions and threshold events, ``_actions.lua``),
#: ``low_balance`` (``LOW_BALANCE`` not ``NO_CAP``: the low balance event),
#: ``models`` (``MODEL_CAPS`` "1": per-model caps, ``_models.lua``),
#: ``sharded`` (``BASE`` "": ``cluster_buckets`` above 1, a project's or the
#: platform's caps admitted against what the bucket was lent, ``_escrow.lua``)
HOOKS = ("cap_actions", "low_balance", "models", "sharded")

#: a tagged line (see :data:`HOOKS`): its hook, and whether it is the
#: off-only variant
_HOOK_LINE = re.compile(rb"^[^\n]*--[ \t]*@(!?)(\w+)[ \t]*(?:\n|$)", re.MULTILINE)
#: a kept line's tag, and the blanks before it
_HOOK_TAG = re.compile(rb"[ \t]*--[ \t]*@!?\w+[ \t]*(?=\n|$)")


def with_hooks(code: bytes, hooks: frozenset[str]) -> bytes:
    """``code`` with its tagged lines kept or dropped for the ``hooks`` on:
    an on-only line stays when its hook is on, an off-only line when it is
    off (each without its tag); every other tagged line is gone, newline and
    all."""

    def keep(match: re.Match[bytes]) -> bytes:
        hook = match.group(2).decode()
        if hook not in HOOKS:
            raise ValueError(f"unknown script hook {hook!r}")
        on = hook in hooks
        if on == bool(match.group(1)):
            return b""
        return _HOOK_TAG.sub(b"", match.group())

    return _HOOK_LINE.sub(keep, code)


def hooks_on(constants: Mapping[str, str]) -> frozenset[str]:
    """The hooks a configuration links in (see :data:`HOOKS`)."""
    on = {
        "cap_actions": constants["CAP_ACTIONS"] == "1",
        "low_balance": constants["LOW_BALANCE"] != protocol.NO_CAP,
        "models": constants["MODEL_CAPS"] == "1",
        "sharded": constants["BASE"] == "",
    }
    return frozenset(hook for hook in HOOKS if on[hook])
