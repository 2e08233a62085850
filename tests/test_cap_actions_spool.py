"""Threshold events and the hooks' switch.

Spool: charges made while Redis is down (``down``: the call never reaches
it) or whose reply was lost (``lost_reply``: applied, then spooled anyway)
are replayed from the spool (the switchable clients of
``tests/spool_helpers.py``); each crossing must be written exactly once.

Switch: the scripts of a deployment with no cap actions and no low balance
amount carry none of their lines (``spendgate.core.hooks.HOOKS``): each
script is its files with every tagged line gone, byte for byte, and names
none of the hooks' constants; with the hooks on, their helpers are linked.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from spendgate import BudgetConfig, BudgetManager
from spendgate.core import scripts
from spendgate.core.scripts import SCRIPT_NAMES, configured_source, lua_dir
from spool_helpers import _drained, _manager, _Switch, flaky  # noqa: F401
from test_cap_actions import crossings, events_of

Flaky = tuple[aioredis.Redis, _Switch, str]

WARNINGS = [
    ("credits.cap_warning", "user", "daily", "0.5"),
    ("credits.cap_warning", "user", "daily", "0.8"),
    ("credits.cap_warning", "user", "daily", "0.95"),
    ("credits.cap_reached", "user", "daily", "1"),
]


async def test_a_spool_replay_after_an_outage_writes_each_crossing_once(
    flaky: Flaky,  # noqa: F811 (the fixture, imported)
    tmp_path: Path,
) -> None:
    _, switch, _ = flaky
    async with _manager(flaky, tmp_path, cap_actions=True) as budget:
        await budget.set_limits("user", "ada", daily=2, action="warn")
        await budget.record_spend("ada", "0.9")  # 0.5 crossed before the outage
        switch.mode = "down"
        spooled = [await budget.record_spend("ada", "0.3") for _ in range(5)]
        assert all(r.spooled and r.warnings == () for r in spooled)
        switch.mode = "ok"
        await _drained(budget)
        assert (await budget.get_usage("ada"))["user"].daily.spent == Decimal("2.4")
        assert crossings(await events_of(budget)) == WARNINGS


async def test_a_charge_applied_whose_reply_was_lost_writes_its_crossing_once(
    flaky: Flaky,  # noqa: F811 (the fixture, imported)
    tmp_path: Path,
) -> None:
    _, switch, _ = flaky
    async with _manager(flaky, tmp_path, cap_actions=True) as budget:
        await budget.set_limits("user", "ada", daily=2, action="notify")
        switch.mode = "lost_reply"  # applied in Redis, spooled, replayed: a replay
        records = [await budget.record_spend("ada", "1") for _ in range(2)]
        assert all(r.spooled for r in records)
        switch.mode = "ok"
        await _drained(budget)
        assert (await budget.get_usage("ada"))["user"].daily.spent == Decimal(2)
        assert crossings(await events_of(budget)) == [
            ("credits.cap_warning", "user", "daily", "0.5"),
            ("credits.cap_warning", "user", "daily", "0.8"),
            ("credits.cap_warning", "user", "daily", "0.95"),
            ("credits.cap_reached", "user", "daily", "1"),
        ]


# -- the switch -------------------------------------------------------------------

#: a line of lua/ that belongs to a hook
_TAGGED = re.compile(rb"^[^\n]*--@(!?)\w+[ \t]*\n", re.MULTILINE)
#: what only the hooks' lines may name
_HOOK_NAMES = re.compile(
    rb"\b(?:CAP_ACTIONS|LOW_BALANCE|cap_events|cap_soft|low_balance|event_append)\b"
)


def _untagged(name: str) -> bytes:
    """``lua/<name>.lua`` as an unconfigured deployment runs it: every on-only
    line gone, every off-only line without its tag."""

    def keep(match: re.Match[bytes]) -> bytes:
        if not match.group(1):
            return b""
        return re.sub(rb"[ \t]*--@!\w+[ \t]*\n$", b"\n", match.group())

    return _TAGGED.sub(keep, (lua_dir() / f"{name}.lua").read_bytes())


def test_an_unconfigured_deployment_runs_none_of_the_hooks_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = BudgetManager(BudgetConfig())._store._constants
    assert (plain["CAP_ACTIONS"], plain["LOW_BALANCE"]) == ("0", "-1")
    sources = {name: configured_source(name, plain) for name in SCRIPT_NAMES}
    for name in SCRIPT_NAMES:
        assert not _HOOK_NAMES.search(sources[name]), name
        assert b"cx:" not in sources[name], name  # no threshold mark is touched
    # Byte for byte the scripts of lua/ with every hook line taken out.
    for path in lua_dir().glob("*.lua"):
        (tmp_path / path.name).write_bytes(_untagged(path.stem))
    monkeypatch.setattr(scripts, "lua_dir", lambda: tmp_path)
    scripts.script_source.cache_clear()
    try:
        for name in SCRIPT_NAMES:
            assert configured_source(name, plain) == sources[name], name
    finally:
        scripts.script_source.cache_clear()


def test_the_hooks_link_their_helpers_only_when_on() -> None:
    actions = BudgetManager(BudgetConfig(cap_actions=True))._store._constants
    low = BudgetManager(BudgetConfig(low_balance_threshold="5"))._store._constants
    record = configured_source("record", actions)
    assert b"local function cap_events(" in record
    assert b"local function low_balance(" not in record
    check = configured_source("check", actions)
    assert b"local function cap_soft(" in check
    assert b"local function cap_events(" not in check
    record = configured_source("record", low)
    assert b"local function low_balance(" in record
    assert b"local function cap_events(" not in record
    assert b"5000000" in record  # the amount, in micro-units, written in
