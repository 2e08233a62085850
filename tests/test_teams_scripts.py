"""Teams cost nothing when unused: the scripts without a team link no team code.

How: statically, each operation that is not a team's is linked with and
without ``lua/_teams.lua`` and the two sources must be byte for byte the
same (no team helper, no team key part reaches it), for every configuration
of the libraries; each team script's KEYS are the routing key and the
team's keys, in ``Keys.team_keys``' order. What the scripts without a team
know of teams is one key, the user's part held on pools (``ph:u:``), and
only where the balance rule is read (with the balance, in the same MGET)
or a hold ends by expiry: the last test says where.
"""

from __future__ import annotations

import re

import pytest

from spendgate.core.hooks import HOOKS
from spendgate.core.keys import KEY_PARTS, Keys
from spendgate.core.operations import OPERATIONS
from spendgate.core.scripts import (
    LIBRARIES,
    SCRIPT_CONSTANTS,
    configured_source,
    script_source,
)

_PLAIN = sorted(name for name in OPERATIONS if not name.startswith("team_"))
_WITHOUT_TEAMS = tuple(lib for lib in LIBRARIES if lib != "_teams")


@pytest.mark.parametrize("operation", _PLAIN)
@pytest.mark.parametrize("hooks", [(), HOOKS], ids=["no hooks", "every hook"])
def test_a_script_without_a_team_is_the_same_with_teams_built(
    operation: str, hooks: tuple[str, ...]
) -> None:
    on = frozenset(hooks)
    assert script_source(operation, LIBRARIES, on) == script_source(
        operation, _WITHOUT_TEAMS, on
    )
    source = configured_source(operation, {name: "1" for name in SCRIPT_CONSTANTS})
    assert b"team" not in source.lower()
    for part in ("TEAM", "TEAM_MEMBERS", "TEAM_HELD", "TEAM_HOLDS"):
        assert KEY_PARTS[part].encode() not in source


def test_team_scripts_declare_the_teams_keys_in_order() -> None:
    keys = Keys("p").team_keys("t", "20260101", "202601")
    assert len(keys) == len(set(keys)) == 6
    for name, op in OPERATIONS.items():
        if name.startswith("team_") and "members" in op.keys and len(op.keys) >= 6:
            assert op.keys[-6:] == (
                "team",
                "members",
                "member_held",
                "team_holds",
                "team_day",
                "team_month",
            )
            body = script_source(name).split(b"\n\n")[-1]
            assert not re.search(rb"BASE \.\. K_TEAM", body), name


@pytest.mark.parametrize("operation", _PLAIN)
def test_only_the_balance_read_and_the_purge_know_the_pool_held_key(
    operation: str,
) -> None:
    """``ph:u:`` (K_POOL_HELD) reaches a script without a team only in the
    MGET that reads the balance (``scopes_mget``/``weekly_mget``: run with
    balances enforced, and by ``deduct``), in ``pool_unhold`` (which the
    expiry purge calls for a team's hold) and in ``balance.lua`` itself."""
    source = configured_source(operation, {name: "1" for name in SCRIPT_CONSTANTS})
    part = KEY_PARTS["POOL_HELD"].replace(":", "\\058").encode()
    where = set()
    for chunk in source.split(b"local function ")[1:]:
        helper, _, rest = chunk.partition(b"\nend\n")
        if part in helper:
            where.add(helper.split(b"(", 1)[0].decode())
        if part in rest:
            where.add("the script's own")
    allowed = {"scopes_mget", "weekly_mget", "pool_unhold"}
    if operation == "balance":
        allowed.add("the script's own")
    assert where <= allowed, where
