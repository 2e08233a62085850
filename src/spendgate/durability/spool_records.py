"""The spool's record format: one fact per line, every version ever written.

A line is ``<crc32 hex> <json>\\n``: the checksum covers the JSON, so a torn
or flipped line is recognised. The JSON of the version written now (3)::

    {"v": 3, "o": "record", "a": {"now_ms": ..., "entry": ..., ...},
     "t": <spooled at, ms>, "i": {<what it is, for logs>}}

``o`` is an operation of :data:`spendgate.core.operations.FACT_OPERATIONS` and
``a`` its arguments by the names of :data:`spendgate.core.operations.OPERATIONS`.
The keys are not stored: they follow from the arguments
(:func:`spendgate.core.fact_keys.fact_keys`), so the record does not depend on the
key layout either.

Versions read as well, so a spool left by an older spendgate replays:

- 2: ``{"v": 2, "s": "lua_record", "k": [KEYS], "a": [ARGV], ...}``, the
  script call as it was sent (written up to commit a31a7f7);
- 1: the same, with the manager's configuration among the arguments at the
  positions of :data:`_V1_CONFIGURATION` (written before commit be06aea).

Both read as version 3: script ``lua_<op>`` is operation ``<op>``, positional
arguments get their names, the stored keys are dropped.

An operation may gain arguments: a record written before stands for the
call with their defaults (:data:`_ADDED_ARGS`). A credit spooled before
grants (7 arguments) replays as a never-expiring purchase of priority 0; a
record or settle spooled before allowances draws on no plan's allowance.
"""

from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from spendgate.core import operations

#: the record format written by this version
RECORD_VERSION = 3

# Version 1 records carried the manager's configuration among a fact's
# arguments (the scripts now hold it as constants): per operation, how many
# arguments a version 1 record has and where the configuration sat (0-based).
_V1_CONFIGURATION = {
    "record": (17, frozenset({0, 7, 9, 10})),
    "settle": (13, frozenset({0, 7, 8})),
    "credit": (10, frozenset({0, 4, 5})),
}

# Arguments operations gained after records were written, with what an older
# record stands for.
_ADDED_ARGS: dict[str, dict[str, str | int]] = {
    "credit": operations.CREDIT_GRANT_DEFAULTS,
    "record": operations.NO_PLAN_ARGS,
    "settle": operations.NO_PLAN_ARGS,
}

# Versions 1 and 2 named the script handle, not the operation.
_SCRIPT_PREFIX = "lua_"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class SpooledFact:
    """One fact as it waits in the spool: the operation, its arguments, context.

    :param operation: a fact operation of :mod:`spendgate.core.protocol`:
        ``"record"``, ``"settle"``, ``"credit"`` or ``"refund"``
    :param args: the operation's ARGV by name, exactly as first sent (``str``
        and ``int``); the keys are rebuilt from them on replay
    :param created_ms: wall-clock time it was spooled, ms since the epoch (for
        the age metric; the fact's own time is inside ``args``)
    :param info: what the fact is (kind, user, amount, entry id), for logs and
        dead letters; never needed to replay it
    """

    operation: str
    args: dict[str, str | int]
    created_ms: int = field(default_factory=_now_ms)
    info: dict[str, Any] = field(default_factory=dict)


class CorruptRecordError(ValueError):
    """A spool line that holds no fact (torn, flipped, or of no known shape)."""


def encode_fact(fact: SpooledFact) -> bytes:
    """One spool line: ``<crc32 hex> <json>\\n``.

    :raise ValueError: an operation that is not a fact, or arguments that are
        not exactly the operation's
    :raise TypeError: an argument that is not ``str`` or ``int``
    """
    args = _checked_args(fact.operation, fact.args)
    body = json.dumps(
        {
            "v": RECORD_VERSION,
            "o": fact.operation,
            "a": args,
            "t": fact.created_ms,
            "i": fact.info,
        },
        separators=(",", ":"),
        default=str,
    ).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def read_fact(line: bytes) -> SpooledFact:
    """The fact of one spool line, of any version.

    :raise CorruptRecordError: with the reason, when the line holds no fact
    """
    line = line.rstrip(b"\n")
    if len(line) < 10 or line[8:9] != b" ":
        raise CorruptRecordError("not a spool record (no checksum)")
    body = line[9:]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            raise CorruptRecordError("checksum mismatch")
        data = json.loads(body)
        if not isinstance(data, dict):
            raise CorruptRecordError("not a JSON object")
        operation, args = _operation_and_args(data)
        return SpooledFact(
            operation=operation,
            args=args,
            created_ms=int(data["t"]),
            info=dict(data.get("i") or {}),
        )
    except CorruptRecordError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptRecordError(f"{type(exc).__name__}: {exc}") from None


def decode_fact(line: bytes) -> SpooledFact | None:
    """The fact of one spool line; ``None`` when it is torn or corrupt."""
    try:
        return read_fact(line)
    except CorruptRecordError:
        return None


def _operation_and_args(data: dict[str, Any]) -> tuple[str, dict[str, str | int]]:
    """A record's operation and named arguments, whatever its version."""
    version = data.get("v")
    if version == RECORD_VERSION:
        operation, args = str(data["o"]), data["a"]
        if not isinstance(args, dict):
            raise CorruptRecordError("arguments are not a mapping")
        return operation, _checked_args(operation, _with_added(operation, args))
    if version not in (1, 2):
        raise CorruptRecordError(f"unknown record version {version!r}")
    script, positional = str(data["s"]), data["a"]
    if not script.startswith(_SCRIPT_PREFIX) or not isinstance(positional, list):
        raise CorruptRecordError(f"not a fact script: {script!r}")
    operation = script.removeprefix(_SCRIPT_PREFIX)
    if operation not in operations.FACT_OPERATIONS:
        raise CorruptRecordError(f"not a fact script: {script!r}")
    if version == 1:
        count, configuration = _V1_CONFIGURATION[operation]
        if len(positional) != count:
            raise CorruptRecordError(
                f"a version 1 {script} has {count} arguments, not {len(positional)}"
            )
        positional = [a for i, a in enumerate(positional) if i not in configuration]
    added = _ADDED_ARGS.get(operation, {})
    names = [n for n in operations.OPERATIONS[operation].args if n not in added]
    if len(positional) == len(names):  # written before the added arguments
        named = {**dict(zip(names, positional, strict=True)), **added}
    else:
        named = operations.named_args(operation, tuple(positional))
    return operation, _checked_args(operation, named)


def _with_added(operation: str, args: dict[str, Any]) -> dict[str, Any]:
    """``args`` with the arguments the operation gained since, at their
    defaults, when it has none of them (a record written before)."""
    added = _ADDED_ARGS.get(operation)
    if added and not set(added) & set(args):
        return {**args, **added}
    return args


def _checked_args(operation: str, args: dict[str, Any]) -> dict[str, str | int]:
    """``args`` in the operation's order, once each is known and ``str``/``int``."""
    spec = operations.OPERATIONS.get(operation)
    if spec is None or not spec.fact:
        raise ValueError(f"not a fact operation: {operation!r}")
    if set(args) != set(spec.args):
        raise ValueError(
            f"{operation} takes the arguments {', '.join(spec.args)};"
            f" got {', '.join(sorted(map(str, args)))}"
        )
    for name in spec.args:
        value = args[name]
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise TypeError(f"spool argument {name} must be str or int, not {value!r}")
    return {name: args[name] for name in spec.args}
