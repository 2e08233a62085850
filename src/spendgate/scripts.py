"""Load the Lua scripts (one per operation) and register them per client.

Each script is ``lua/_lib.lua`` followed by ``lua/<operation>.lua``, so every
operation is one self-contained EVALSHA. redis-py's ``Script`` handles the
SHA: on ``NOSCRIPT`` (a restarted Redis, ``SCRIPT FLUSH``) it loads the
source again and retries, transparently.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

#: every operation, one ``lua/<name>.lua`` each
SCRIPT_NAMES = (
    "check",
    "reserve",
    "settle",
    "release",
    "record",
    "credit",
    "set_limits",
    "usage",
)


def lua_dir() -> Path:
    """Where the scripts are: inside the installed wheel, or the checkout's ``lua/``.

    Editable installs map ``src/spendgate`` only, so the top-level ``lua/``
    of the checkout is the fallback.
    """
    packaged = resources.files("spendgate").joinpath("lua")
    if packaged.is_dir():
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parents[2] / "lua"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(
        "spendgate's Lua scripts are missing from this installation"
    )


@cache
def script_source(name: str) -> bytes:
    """The full source of one operation's script, library included."""
    if name not in SCRIPT_NAMES:
        raise KeyError(name)
    folder = lua_dir()
    return (
        (folder / "_lib.lua").read_bytes()
        + b"\n"
        + (folder / f"{name}.lua").read_bytes()
    )


class Scripts:
    """One registered script handle per operation, for one client."""

    lua_check: AsyncScript
    lua_reserve: AsyncScript
    lua_settle: AsyncScript
    lua_release: AsyncScript
    lua_record: AsyncScript
    lua_credit: AsyncScript
    lua_set_limits: AsyncScript
    lua_usage: AsyncScript

    def __init__(self, client: Redis) -> None:
        self.client = client
        for name in SCRIPT_NAMES:
            setattr(self, f"lua_{name}", client.register_script(script_source(name)))

    async def load_all(self) -> None:
        """Load every script now, so the first call of each is one round trip."""
        for name in SCRIPT_NAMES:
            script: AsyncScript = getattr(self, f"lua_{name}")
            script.sha = await self.client.script_load(script.script)
