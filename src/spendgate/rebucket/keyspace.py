"""What each key of a deployment is, read off its name, for a rebucketing:
whose it is and so where the new layout keeps it (:func:`classify`).

A key is ``"<prefix>:{sg}:<rest>"`` (the root's) or
``"<prefix>:{sg:<bucket>}:<rest>"``, ``<rest>`` one of the layout
:mod:`spendgate.core.keys` draws; the patterns here are built from its
:data:`~spendgate.core.keys.KEY_PARTS`, so the two cannot drift apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from spendgate.core.keys import KEY_PARTS, SCOPE_LETTERS

__all__ = ["Kind", "Found", "classify", "home_of"]


class Kind(Enum):
    """What a key is, as a rebucketing treats it."""

    #: one user's (``owner``): goes to the user's bucket
    USER = "user"
    #: a project's or the platform's day or month counter: the buckets'
    #: counters of it are added up (``group``: the counter's rest)
    SHARED_COUNTER = "shared counter"
    #: escrow's loans of a shared cap (``group``: the counter they lend)
    ESCROW = "escrow"
    #: a project's or the platform's cap overrides: one copy per bucket
    SHARED_LIMITS = "shared limits"
    #: a project's or the platform's week or per-model day or month
    #: counter: a sharded layout keeps no cap on it (not carried there);
    #: back on one bucket, the buckets' counters are added up
    SHARED_SUMMED = "shared, summed on one bucket"
    #: what else a sharded layout keeps no cap on (a project's or the
    #: platform's minute, per-model held amounts, cap marks): not carried
    SHARED_DROPPED = "shared, no cap sharded"
    #: a project's or the platform's per-model caps: refused when sharded
    SHARED_MODEL_LIMITS = "shared model limits"
    #: a hold's record (``owner``: the lease id)
    HOLD = "hold"
    #: a charge's refund record (``owner``: the entry id)
    CHARGE = "charge"
    #: a rebucketing's forward of a charge's record (``owner``: entry id)
    FORWARD = "forward"
    #: an idempotency record (the user is not in it)
    IDEMPOTENCY = "idempotency"
    #: users scored by their next grant expiry (members: user ids)
    GRANTS_DUE = "grants due"
    #: a rebucketing's merge mark (``owner``: its run id)
    MERGED = "merge mark"
    #: a stream (``ledger``, ``events``, their dead letters)
    STREAM = "stream"
    #: a flusher's or dispatcher's heartbeat: one is running
    HEARTBEAT = "heartbeat"
    #: what each home keeps of its own (pending holds' index, the consumer
    #: sets, a bucket's copy of the active price book version)
    HOME = "home"
    #: the root's alone (price books, plans, the layout)
    ROOT = "root"
    #: a team's: refused when sharded
    TEAM = "team"
    #: nothing spendgate writes
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Found:
    """One key, read: its kind, and whose it is (see :class:`Kind`)."""

    kind: Kind
    owner: str = ""
    #: the rest of the counter a shared key belongs to (SHARED_COUNTER,
    #: ESCROW: the day's or month's counter)
    group: str = ""


def _p(name: str) -> str:
    return re.escape(KEY_PARTS[name])


_S = "([" + "".join(SCOPE_LETTERS.values()) + "]):"
_DAY, _MONTH = r"\d{8}:", r"\d{6}:"
#: scoped counters and records: (window-free) rest -> its scope and id
_SCOPED = re.compile(
    rf"(?:{_p('DAY')}{_DAY}|{_p('WEEK')}{_DAY}|{_p('MONTH')}{_MONTH}"
    rf"|{_p('MINUTE')}|{_p('HELD')}|{_p('LIMITS')}"
    rf"|{_p('CAP_MARK')}(?:d:{_DAY}|m:{_MONTH})){_S}(.*)",
    re.DOTALL,
)
_MODEL = re.compile(
    rf"({_p('MODEL_LIMITS')}|{_p('MODEL_DAY')}{_DAY}|{_p('MODEL_MONTH')}{_MONTH}"
    rf"|{_p('MODEL_HELD')}){_S}(\d+):",
    re.DOTALL,
)
_USER_ONLY = re.compile(
    rf"(?:{_p('BALANCE')}|{_p('GRANTS')}|{_p('GRANT_ORDER')}|{_p('GRANT_EXPIRY')}"
    rf"|{_p('USER_PLAN')}|{_p('ALLOWANCE')}\d+:|{_p('FEATURE_USE')}[a-z]\d{{8}}:)(.*)",
    re.DOTALL,
)
_ESCROW = re.compile(rf"{_p('ESCROW')}([pg]):(.*):(\d{{8}}|\d{{6}})", re.DOTALL)
_TEAM = re.compile(
    "|".join(
        _p(n) for n in ("TEAM", "TEAM_MEMBERS", "TEAM_HELD", "TEAM_HOLDS", "POOL_HELD")
    )
    + rf"|(?:{_p('TEAM_DAY')}|{_p('TEAM_MONTH')})\d+:"
)
_BY_ID = (
    (KEY_PARTS["HOLD"], Kind.HOLD),
    (KEY_PARTS["CHARGE"], Kind.CHARGE),
    (KEY_PARTS["FORWARD"], Kind.FORWARD),
    (KEY_PARTS["CALLER_IDEMPOTENCY"], Kind.IDEMPOTENCY),
    (KEY_PARTS["GENERATED_IDEMPOTENCY"], Kind.IDEMPOTENCY),
    (KEY_PARTS["MERGED"], Kind.MERGED),
)
_LEDGER, _EVENTS = KEY_PARTS["LEDGER"], KEY_PARTS["EVENTS"]
_EXACT = {
    KEY_PARTS["HOLDS"]: Kind.HOME,
    KEY_PARTS["DUE"]: Kind.HOME,
    KEY_PARTS["PRICE_ACTIVE"]: Kind.HOME,
    _LEDGER + ":flushers": Kind.HOME,
    KEY_PARTS["GRANTS_DUE"]: Kind.GRANTS_DUE,
    _LEDGER: Kind.STREAM,
    _EVENTS: Kind.STREAM,
    _LEDGER + ":dead": Kind.STREAM,
    _EVENTS + ":dead": Kind.STREAM,
    KEY_PARTS["PRICE_NEXT"]: Kind.ROOT,
    KEY_PARTS["PLANS"]: Kind.ROOT,
    KEY_PARTS["PLANS_REV"]: Kind.ROOT,
    KEY_PARTS["LAYOUT"]: Kind.ROOT,
}
_PREFIXED = (
    (_LEDGER + ":flusher:", Kind.HEARTBEAT),
    (_EVENTS + ":dispatcher:", Kind.HEARTBEAT),
    (_EVENTS + ":dispatchers:", Kind.HOME),
    (KEY_PARTS["PRICE_BOOK"], Kind.ROOT),
    (KEY_PARTS["PRICE_META"], Kind.ROOT),
)
_USER_LETTER = SCOPE_LETTERS["user"]


def classify(rest: str) -> Found:
    """What the key whose name below its home's base is ``rest`` is."""
    if rest in _EXACT:
        return Found(_EXACT[rest])
    for prefix, kind in _PREFIXED:
        if rest.startswith(prefix):
            return Found(kind)
    scoped = _SCOPED.fullmatch(rest)
    if scoped:
        letter, owner = scoped.groups()
        if letter == _USER_LETTER:
            return Found(Kind.USER, owner)
        if rest.startswith((KEY_PARTS["DAY"], KEY_PARTS["MONTH"])):
            return Found(Kind.SHARED_COUNTER, group=rest)
        if rest.startswith(KEY_PARTS["LIMITS"]):
            return Found(Kind.SHARED_LIMITS, group=rest)
        if rest.startswith(KEY_PARTS["WEEK"]):
            return Found(Kind.SHARED_SUMMED, group=rest)
        return Found(Kind.SHARED_DROPPED)
    model = _MODEL.match(rest)
    if model:
        return _model_key(rest, model)
    user = _USER_ONLY.fullmatch(rest)
    if user:
        return Found(Kind.USER, user.group(1))
    escrow = _ESCROW.fullmatch(rest)
    if escrow:
        letter, owner, window = escrow.groups()
        part = KEY_PARTS["DAY"] if len(window) == 8 else KEY_PARTS["MONTH"]
        return Found(Kind.ESCROW, group=f"{part}{window}:{letter}:{owner}")
    for prefix, kind in _BY_ID:
        if rest.startswith(prefix) and len(rest) > len(prefix):
            return Found(kind, rest[len(prefix) :])
    if _TEAM.match(rest):
        return Found(Kind.TEAM)
    return Found(Kind.UNKNOWN)


def _model_key(rest: str, match: re.Match[str]) -> Found:
    """A per-model key: ``<part><s>:<n>:<model>:<id>``, ``<n>`` the model
    id's length in UTF-8 bytes."""
    part, letter, length = match.groups()
    tail = rest[match.end() :].encode()
    model_bytes = int(length)
    if len(tail) <= model_bytes or tail[model_bytes : model_bytes + 1] != b":":
        return Found(Kind.UNKNOWN)
    owner = tail[model_bytes + 1 :].decode()
    if letter == _USER_LETTER:
        return Found(Kind.USER, owner)
    if part == KEY_PARTS["MODEL_LIMITS"]:
        return Found(Kind.SHARED_MODEL_LIMITS)
    if part.startswith((KEY_PARTS["MODEL_DAY"], KEY_PARTS["MODEL_MONTH"])):
        return Found(Kind.SHARED_SUMMED, group=rest)
    return Found(Kind.SHARED_DROPPED)


def home_of(key_prefix: str) -> re.Pattern[bytes]:
    """Reads a key's home off its name: group 1 the bucket's number (absent
    for the root's), group 2 the rest."""
    return re.compile(
        re.escape(key_prefix.encode()) + rb":\{sg(?::(\d+))?\}:(.*)", re.DOTALL
    )
