"""Load the Lua scripts (one per operation) and register them per client.

Each script is the manager's configuration as Lua constants, the protocol
and key layout constants it uses (:mod:`spendgate.core.protocol`,
:mod:`spendgate.core.keys`), the helpers of ``lua/_lib.lua`` it uses, then
``lua/<operation>.lua``, so every operation is one self-contained EVALSHA
whose arguments are only what changes per call.
On ``NOSCRIPT`` (a restarted Redis, ``SCRIPT FLUSH``) the source is loaded
again and the call retried once.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError

from spendgate.config import DEFAULT_CAPS
from spendgate.core import keys, operations, protocol
from spendgate.core.hooks import hooks_on, with_hooks
from spendgate.core.pipeline import AutoPipeline

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

#: every operation, one ``lua/<name>.lua`` each
SCRIPT_NAMES = tuple(operations.OPERATIONS)

#: the protocol and the key layout as Lua constants: each script gets those
#: it names
PROTOCOL_CONSTANTS: dict[str, int | str] = {
    **protocol.lua_constants(),
    **keys.lua_constants(),
}

#: the default caps among the script constants, in the order of
#: spendgate.config.DEFAULT_CAPS ("USER_DAILY", "USER_MONTHLY", ...,
#: "USER_WEEKLY", ..., "USER_PER_MINUTE", ...)
DEFAULT_CAP_CONSTANTS = tuple(
    f"{scope}_{window}".upper() for scope, window, _ in DEFAULT_CAPS
)

#: the configuration every script starts with, as Lua constants (their
#: meanings are in ``lua/_lib.lua``; ``BASE`` is ``""`` on a sharded
#: deployment: see :func:`configured_source`), in this order
SCRIPT_CONSTANTS = (
    "BASE",
    "ENFORCE_BALANCE",
    "MIN_BALANCE",
    "PURGE_MAX",
    *DEFAULT_CAP_CONSTANTS,
    "WEEKLY",
    "VELOCITY",
    "MINUTE_OVERRIDES",
    "KILL_SWITCH_MS",
    "IDEMPOTENCY_TTL_MS",
    "LEDGER_MAXLEN",
    "GRANTS_PER_CALL",
    "REFUND_WINDOW_MS",
    "CAP_ACTIONS",
    "LOW_BALANCE",
    "MODEL_CAPS",
)


def lua_dir() -> Path:
    """Where the scripts are: inside the installed wheel, or the checkout's ``lua/``.

    Editable installs map ``src/spendgate`` only, so the top-level ``lua/``
    of the checkout is the fallback.
    """
    packaged = resources.files("spendgate").joinpath("lua")
    if packaged.is_dir():
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parents[3] / "lua"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(
        "spendgate's Lua scripts are missing from this installation"
    )


#: times a call that met NOSCRIPT reloads its script before it sends the
#: whole source instead
RELOAD_ATTEMPTS = 3

#: a Lua comment, to the end of its line
_COMMENT = re.compile(rb"--[^\n]*")

#: where each helper of a library starts
_HELPER = re.compile(rb"^local function (\w+)", re.MULTILINE)

#: the helper libraries of ``lua/``, in the order their helpers are listed:
#: ``_teams`` the teams' (first: a library's opening comment ends up in the
#: text of the helper before it, and the teams' is then dropped, while
#: _refunds' goes with a team helper; so the scripts that never touch a team
#: link exactly what they linked before teams existed), ``_refunds`` what
#: the refund scripts share (next: _lib's opening comment goes with one of
#: its helpers, which only the refunds link), ``_holds`` holds' records,
#: held amounts and purge, ``_records`` a
#: call's idempotency records and ledger appends, ``_windows`` holds
#: what the weekly and per-minute windows share,
#: ``_week`` and ``_minute`` each window's own, ``_kill`` the kill switch's,
#: ``_grants`` a user's grants (every configuration: a user may hold some),
#: ``_allowance`` a plan's free allowance (every configuration: a user may
#: have a plan), ``_events`` what the scripts that write events share,
#: ``_actions`` cap actions and threshold events, ``_models`` per-model caps,
#: ``_escrow`` a sharded deployment's shared caps
LIBRARIES = (
    "_teams",
    "_refunds",
    "_lib",
    "_holds",
    "_records",
    "_grants",
    "_allowance",
    "_windows",
    "_week",
    "_minute",
    "_events",
    "_kill",
    "_actions",
    "_models",
    "_escrow",
)


@cache
def script_source(
    name: str,
    libraries: tuple[str, ...] = LIBRARIES,
    hooks: frozenset[str] = frozenset(),
) -> bytes:
    """The full source of one operation's script: the helpers of the
    ``libraries`` it uses (directly or through another helper), each after
    the helpers it calls, then ``lua/<name>.lua``, the constants still named
    (:func:`configured_source` writes their values in).

    Redis runs the whole source on every call, so each helper left in costs
    every call the making of its closure; only the used ones are linked in,
    and only from the libraries a configuration needs
    (:func:`linked_libraries`): the scripts call the windows' helpers only
    behind ``WEEKLY``/``VELOCITY`` checks. The tagged lines of the
    ``hooks`` (:data:`~spendgate.core.hooks.HOOKS`) are kept or dropped
    first, in the libraries and in the script alike.
    """
    if name not in SCRIPT_NAMES:
        raise KeyError(name)
    folder = lua_dir()
    body = with_hooks((folder / f"{name}.lua").read_bytes(), hooks)
    library = with_hooks(
        b"\n".join((folder / f"{lib}.lua").read_bytes() for lib in libraries), hooks
    )
    return _link(library, body) + b"\n" + body


def linked_libraries(constants: Mapping[str, str]) -> tuple[str, ...]:
    """The libraries a configuration's scripts are linked from: ``_lib``,
    ``_holds``, ``_records``, ``_grants``, ``_allowance``, ``_teams`` and ``_refunds``;
    ``_week`` unless ``WEEKLY`` is ``"0"``, ``_minute`` unless ``VELOCITY``
    is, ``_windows`` with either, ``_kill`` with ``_minute`` unless
    ``KILL_SWITCH_MS`` is ``"0"``, ``_actions`` with the ``cap_actions``
    hook, ``_models`` with the ``models`` hook, ``_escrow`` with the
    ``sharded`` hook, and ``_events`` with
    ``_kill`` or an event-writing hook."""
    week, minute = constants["WEEKLY"] != "0", constants["VELOCITY"] != "0"
    kill = minute and constants["KILL_SWITCH_MS"] != "0"
    hooks = hooks_on(constants)
    on = {
        "_teams": True,
        "_refunds": True,
        "_lib": True,
        "_holds": True,
        "_records": True,
        "_grants": True,
        "_allowance": True,
        "_windows": week or minute,
        "_week": week,
        "_minute": minute,
        "_events": kill or bool(hooks - {"models"}),
        "_kill": kill,
        "_actions": "cap_actions" in hooks,
        "_models": "models" in hooks,
        "_escrow": "sharded" in hooks,
    }
    return tuple(lib for lib in LIBRARIES if on[lib])


def configured_source(name: str, constants: Mapping[str, str]) -> bytes:
    """One operation's script for one configuration: :func:`script_source`
    with every constant it names written in as a literal: ``constants`` (a
    value for each of :data:`SCRIPT_CONSTANTS`) and the protocol's
    (:data:`PROTOCOL_CONSTANTS`). Adjacent string literals are joined, so a
    key's fixed part (``BASE .. K_DAY``) is one literal, and comments go.

    What is the same on every call is part of the script rather than of each
    call's arguments: each argument costs the client and Redis on every call,
    a constant costs nothing once loaded. Written in rather than declared as
    locals: a local that a helper uses is an upvalue of its closure, and
    Redis makes every helper's closure again on every call, looking each
    upvalue up among the open ones (a cost that grows with the constants).
    Each configuration is its own script (its own SHA).
    """
    if set(constants) != set(SCRIPT_CONSTANTS):
        raise ValueError(
            f"script constants must be exactly {', '.join(SCRIPT_CONSTANTS)}"
        )
    values = {
        **{name.encode(): _lua_literal(v) for name, v in PROTOCOL_CONSTANTS.items()},
        **{name.encode(): _lua_literal(constants[name]) for name in SCRIPT_CONSTANTS},
    }
    source = script_source(name, linked_libraries(constants), hooks_on(constants))
    if not constants["BASE"]:  # sharded: each call's base is its first key's
        del values[b"BASE"]
        source = _BASE_OF_FIRST_KEY + source
    code = _COMMENT.sub(b"", source)
    code = _CONSTANT_NAME.sub(lambda m: values.get(m.group(), m.group()), code)
    joined = _ADJACENT_LITERALS.sub(rb"'\1\2'", code)
    while joined != code:  # 'a' .. 'b' .. 'c': one pair per pass
        code, joined = joined, _ADJACENT_LITERALS.sub(rb"'\1\2'", joined)
    return code


#: a sharded deployment's scripts start with it (spendgate.core.shards):
#: the keys' base is the first key's, up to the end of its hash tag (a key
#: prefix has no braces), so every key a call builds is in that key's slot
_BASE_OF_FIRST_KEY = b"local BASE = string.match(KEYS[1], '^[^{]*{[^}]*}:')\n"

#: a name that may be a constant's (constants are upper case)
_CONSTANT_NAME = re.compile(rb"\b[A-Z][A-Z0-9_]*\b")
#: two string literals as _lua_literal writes them, concatenated
_ADJACENT_LITERALS = re.compile(rb"'([A-Za-z0-9\\]*)' \.\. '([A-Za-z0-9\\]*)'")


def _lua_literal(value: int | str) -> bytes:
    return b"%d" % value if isinstance(value, int) else _lua_string(value)


def _lua_string(value: str) -> bytes:
    # Every byte but letters and digits as a three-digit decimal escape: no
    # value can end the literal or change the code around it.
    return b"'%s'" % b"".join(
        bytes((byte,)) if chr(byte).isalnum() and byte < 128 else b"\\%03d" % byte
        for byte in value.encode()
    )


def _link(library: bytes, body: bytes) -> bytes:
    """The helpers of ``library`` that ``body`` calls, directly or through
    another helper: each after the ones it calls (a Lua local function sees
    only the locals defined before it), otherwise in the library's order."""
    starts = [m.start() for m in _HELPER.finditer(library)] + [len(library)]
    helpers = {}
    for start, end in itertools.pairwise(starts):
        match = _HELPER.match(library, start)
        assert match is not None
        if match.group(1) in helpers:
            raise ValueError(f"helper {match.group(1).decode()} defined twice")
        helpers[match.group(1)] = library[start:end]
    calls = {
        helper: [
            other
            for other in helpers
            if other != helper and re.search(rb"\b" + other + rb"\(", code)
        ]
        for helper, code in (
            (helper, _COMMENT.sub(b"", text)) for helper, text in helpers.items()
        )
    }
    code = _COMMENT.sub(b"", body)
    pending = [h for h in helpers if re.search(rb"\b" + h + rb"\(", code)]
    used: set[bytes] = set()
    while pending:
        helper = pending.pop()
        if helper not in used:
            used.add(helper)
            pending.extend(calls[helper])
    # Kahn's order: the first helper in the library whose callees are all
    # placed (a call cycle, which Lua locals cannot have, keeps its order).
    ordered: list[bytes] = []
    while len(ordered) < len(used):
        ready = [
            h
            for h in helpers
            if h in used
            and h not in ordered
            and all(c in ordered or c not in used for c in calls[h])
        ]
        ordered.append(
            ready[0] if ready else next(h for h in helpers if h in used - set(ordered))
        )
    return b"".join(helpers[helper] for helper in ordered)


class Scripts:
    """One registered script handle per operation, for one client.

    :attr:`handles` maps each operation of :data:`spendgate.core.operations.OPERATIONS`
    to its handle (also reachable as ``lua_<operation>``).
    """

    lua_check: AsyncScript
    lua_reserve: AsyncScript
    lua_settle: AsyncScript
    lua_release: AsyncScript
    lua_record: AsyncScript
    lua_credit: AsyncScript
    lua_set_limits: AsyncScript
    lua_usage: AsyncScript
    lua_refund: AsyncScript
    lua_balance: AsyncScript
    lua_grants_sweep: AsyncScript

    def __init__(
        self,
        client: Redis,
        constants: Mapping[str, str],
        *,
        pipelining: bool = False,
    ) -> None:
        """:param constants: the configuration, see :func:`configured_source`"""
        self.client = client
        # With pipelining, concurrent calls share round trips (see
        # spendgate.core.pipeline); a lone call still goes straight out.
        self._pipeline = AutoPipeline(client) if pipelining else None
        #: sends one command and returns its reply: the hot path's way out
        self.send: Callable[..., Awaitable[Any]] = (
            self._pipeline.execute if self._pipeline is not None else self._direct
        )
        #: operation name -> its registered script
        self.handles: dict[str, AsyncScript] = {}
        #: the SCRIPT LOAD in flight per operation (see reload_and_call)
        self._loading: dict[str, asyncio.Future[Any]] = {}
        for name in SCRIPT_NAMES:
            script = client.register_script(configured_source(name, constants))
            self.handles[name] = script
            setattr(self, f"lua_{name}", script)

    def _direct(self, *command: Any) -> Awaitable[Any]:
        # Looked up per call, not bound once: whoever wraps the client's
        # execute_command later (a tracer, a test) still sees every command.
        return self.client.execute_command(*command)  # type: ignore[no-untyped-call]

    async def reload_and_call(
        self, operation: str, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """Run ``operation`` after Redis answered ``NOSCRIPT`` (a restart, a
        failover, ``SCRIPT FLUSH``): the retry of a call first sent with
        :attr:`send` and the registered SHA.

        The script is loaded once however many calls met the ``NOSCRIPT``
        together (one ``SCRIPT LOAD`` in flight per script; the others wait
        for it), through the same way out as every call, so a burst neither
        takes a connection per caller nor turns into an outage. Should the
        cache be flushed again between the load and the retry, it is loaded
        again; after :data:`RELOAD_ATTEMPTS` the call is sent with its whole
        source (``EVAL``), which cannot meet ``NOSCRIPT``.
        """
        script = self.handles[operation]
        command = (len(keys), *keys, *args)
        for _ in range(RELOAD_ATTEMPTS):
            await self._load_once(operation)
            try:
                return await self.send("EVALSHA", script.sha, *command)
            except NoScriptError:
                continue
        return await self.send("EVAL", script.script, *command)

    async def _load_once(self, operation: str) -> None:
        loading = self._loading.get(operation)
        if loading is None:
            script = self.handles[operation]
            loading = asyncio.ensure_future(self.send("SCRIPT", "LOAD", script.script))
            self._loading[operation] = loading
            loading.add_done_callback(lambda _: self._loading.pop(operation, None))
        # shield: one waiter cancelled must not cancel the others' load
        await asyncio.shield(loading)

    async def load_all(self) -> None:
        """Load every script now, so the first call of each is one round trip."""
        for script in self.handles.values():
            script.sha = await self.client.script_load(script.script)
