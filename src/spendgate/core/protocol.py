"""The protocol between Python and the Lua scripts, defined once.

Everything both sides must agree on lives here: the scripts' reply codes,
the window codes of a refusal, the states of a hold record, the ledger's
entry kinds and fields, the events' types and fields. The scripts receive
these as Lua constants when they are loaded (:func:`lua_constants`, used by
:mod:`spendgate.core.scripts`), and the flusher and the SQL read the
ledger's fields from :data:`LEDGER_FIELDS`. Each operation's KEYS and ARGV
by name are :mod:`spendgate.core.operations`'; the key layout is built in
one place too, :mod:`spendgate.core.keys`, which hands its parts to the
scripts the same way. ``tests/test_protocol_contract.py`` reads
both sides and proves they agree.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Literal, NamedTuple


class Reply(IntEnum):
    """The first element of every script's reply. Lua: ``R_<NAME>``."""

    #: done (admitted, recorded, settled, released...)
    OK = 0
    #: admission refused: ``{REFUSED, scope index, window, limit, spent, held}``;
    #: a ``MINUTE`` refusal adds when the scope frees up (ms):
    #: ``{..., held, free_ms}``
    REFUSED = 1
    #: an idempotent replay: the first call's result follows
    REPLAYED = 2
    #: the idempotency key was used with other arguments
    CONFLICT = 3
    #: no such lease (never granted, or its record is gone)
    UNKNOWN_LEASE = 4
    #: the lease was released (a settle is refused)
    LEASE_RELEASED = 5
    #: the lease was settled (a release is refused)
    LEASE_SETTLED = 6
    #: deduct: the call was priced with a price book that is no longer the
    #: active one: ``{STALE_PRICE, active version}``, or for a user whose
    #: plan is not the one priced for: ``{STALE_PRICE, version, the user's
    #: plan}`` (priced again, retried); use_feature, record, check, reserve,
    #: reserve_up_to: the user's plan is not the one expected:
    #: ``{STALE_PRICE, the user's plan}``; settle: ``{STALE_PRICE, user,
    #: the user's plan}`` (the plan's allowance period computed again,
    #: retried)
    STALE_PRICE = 7
    #: no price book of that version
    UNKNOWN_VERSION = 8
    #: the lease's expiry passed (an extend is refused; a settle is not)
    LEASE_EXPIRED = 9
    #: refund: no refundable charge of that entry id (never made, older than
    #: the refund window, or made while refunds were off)
    UNKNOWN_ENTRY = 10
    #: refund: more than what is left to refund of the charge:
    #: ``{REFUND_EXCEEDS, refundable left}``
    REFUND_EXCEEDS = 11
    #: a team charge by a user who is not a member of the team (nothing
    #: changed)
    NOT_A_MEMBER = 12
    #: no team of that id
    UNKNOWN_TEAM = 13
    #: create_team: a team of that id exists already
    TEAM_EXISTS = 14
    #: team_refund: the charge was counted in another day than the one whose
    #: team keys the call declared (the window time zone changed since the
    #: charge): ``{CHARGE_DAY, its day}``; nothing changed, the call is made
    #: again with that day's keys
    CHARGE_DAY = 15
    #: sharded (spendgate.ops.escrow_admission): the user's bucket holds too
    #: little of a project's or the platform's cap (what the root lent it):
    #: ``{ESCROW, then per scope and window short: scope index, window,
    #: cap, shortfall, spent, held and allowance (the bucket's), scope id,
    #: window id}``;
    #: nothing changed, the call is made again once the bucket borrowed
    ESCROW = 16
    #: refund, settle, release: a rebucketing (spendgate.rebucket) moved the
    #: charge's or the finished hold's record to the bucket of its user:
    #: ``{MOVED, "<that bucket>:<run>"}``; nothing changed, the call is made
    #: again there
    MOVED = 17
    #: credit: the grant's expiry has passed and its idempotency key names
    #: no earlier credit to replay (nothing changed)
    PAST_EXPIRY = 18


class WindowCode(IntEnum):
    """The window a refusal names. Lua: ``W_<NAME>``."""

    #: the day's cap
    DAILY = 1
    #: the month's cap
    MONTHLY = 2
    #: the prepaid balance
    BALANCE = 3
    #: the week's cap (ISO weeks, from Monday 00:00 in the window time zone)
    WEEKLY = 4
    #: the per-minute cap (a sliding minute), or its kill switch
    MINUTE = 5


#: the name the API uses for a window
WindowName = Literal["daily", "monthly", "balance", "weekly", "minute"]

#: a refusal's window code -> the name the API uses. Lua: ``WN_<NAME>``
WINDOW_NAMES: dict[int, WindowName] = {
    WindowCode.DAILY: "daily",
    WindowCode.MONTHLY: "monthly",
    WindowCode.BALANCE: "balance",
    WindowCode.WEEKLY: "weekly",
    WindowCode.MINUTE: "minute",
}


class TeamScope(IntEnum):
    """The scope index of a team charge's refusal by the team (where the
    other refusals count user, [project,] global from 1). Lua: ``SC_<NAME>``."""

    #: the team's shared pool (window ``balance``)
    TEAM = 101
    #: the member's caps on the team (windows ``daily``, ``monthly``)
    MEMBER = 102


class HoldState(StrEnum):
    """The ``st`` field of a hold record. Lua: ``HOLD_<NAME>``."""

    #: counting against its scopes
    PENDING = "p"
    #: posted at its actual cost
    SETTLED = "s"
    #: released, nothing charged
    VOIDED = "v"
    #: its expiry passed before it was settled or released
    EXPIRED = "x"


class LedgerKind(StrEnum):
    """The ``kind`` of a ledger entry. Lua: ``KIND_<NAME>``."""

    #: a direct charge (``record_spend``)
    SPEND = "spend"
    #: a lease posted at its actual cost (``settle``)
    SETTLE = "settle"
    #: prepaid credits added: the legacy kind of ``add_credits`` rows written
    #: before grants (counted exactly as ``grant``)
    CREDIT = "credit"
    #: a grant of prepaid credits (``add_credits``)
    GRANT = "grant"
    #: the unused remainder of a grant that expired (the sweep)
    EXPIRE = "expire"
    #: money given back for a charge (``refund``; ``link_id`` names the charge)
    REFUND = "refund"
    #: an operator's correction of a counter (``adjust_usage``); the only kind
    #: whose amount is signed (+ raises the counter, - lowers it)
    ADJUST = "adjust"


#: the kinds whose amount is money spent (analytics, reconcile)
SPEND_KINDS = (LedgerKind.SPEND, LedgerKind.SETTLE)
#: the kinds whose amount is signed. Every other kind's amount is >= 0 and
#: its sign is the kind's: net spend = spend + settle - refund (+ adjust),
#: credits in = grant + credit, credits out = expire.
SIGNED_KINDS = (LedgerKind.ADJUST,)


#: a grant's expiry when it never expires (ms; Lua ``GRANT_NEVER``): every
#: real expiry is before it, so it sorts last among 13-digit times
GRANT_NEVER_MS = 9_999_999_999_999


#: how a cap is written where the scripts read it (a default cap constant,
#: an override, an argument of set_limits): micro-units, or this for "no cap"
NO_CAP = "-1"
#: set_limits: leave this cap as it is
LIMIT_KEEP = ""
#: set_limits: drop this cap's override (the configured default applies)
LIMIT_DEFAULT = "-"


class CapAction(StrEnum):
    """What a daily or monthly cap does when reached (``set_limits(...,
    action=)``). Lua: ``CA_<NAME>`` is its letter in an override
    (:data:`CAP_ACTION_LETTERS`)."""

    #: refuse at the cap (Part 1's rule); its events: reaching the cap
    DENY = "deny"
    #: admit past the cap; the charge's result carries the thresholds it
    #: crossed, and each crossing is an event
    WARN = "warn"
    #: admit past the cap; each crossing is an event (the result says nothing)
    NOTIFY = "notify"


#: an action -> its letter, first of the actions part of an override
CAP_ACTION_LETTERS: dict[CapAction, str] = {
    CapAction.DENY: "d",
    CapAction.WARN: "w",
    CapAction.NOTIFY: "n",
}

#: a threshold as an override stores it: parts of this of the cap (1 000 000
#: is the cap itself). Lua: ``THRESHOLD_SCALE``
THRESHOLD_SCALE = 1_000_000

#: where a charge's replay payload (its idempotency record, a settled hold's
#: ``pl``) goes on with the thresholds the charge took warn scopes to, so
#: that a replay answers the same warnings (with cap actions only: see
#: ``cap_payload`` in lua/_actions.lua). No payload holds it otherwise: each
#: starts with an entry id (hex) and goes on with numbers. Lua:
#: ``WARNED_MARK``
WARNED_MARK = "|w"


class EventType(StrEnum):
    """The ``type`` of an event (bursar's names). Lua: ``EV_<NAME>``."""

    #: a charge was recorded (from the ledger stream)
    DEDUCTED = "credits.deducted"
    #: credits were added (from the ledger stream)
    ADDED = "credits.added"
    #: a charge was refunded (from the ledger stream)
    REFUNDED = "credits.refunded"
    #: a grant's remainder expired (from the ledger stream)
    EXPIRED = "credits.expired"
    #: a threshold below 1 of a cap was crossed (written by the script)
    CAP_WARNING = "credits.cap_warning"
    #: a cap was reached, or a kill switch tripped (written by the script)
    CAP_REACHED = "credits.cap_reached"
    #: a balance fell below the configured amount (written by the script)
    LOW_BALANCE = "credits.low_balance"


class EventField(NamedTuple):
    """One field of an entry of the events stream (the events a script
    writes itself; the fact events are read off the ledger stream)."""

    #: the field's name in the stream
    name: str
    #: the attribute of the delivered event it fills
    attribute: str


#: the fields of an events stream entry. The event's stable id is its
#: stream entry id (a bucket's, sharded, with ``~<bucket>`` after it:
#: ``spendgate.events.entries.events_entry_id``): the script that crosses a
#: threshold writes it once.
#: Lua: ``EF_<ATTRIBUTE>`` is the stream name of each.
EVENT_FIELDS = (
    EventField("ty", "type"),
    EventField("t", "occurred_at"),
    EventField("u", "user_id"),
    EventField("sc", "scope"),
    EventField("si", "scope_id"),
    EventField("w", "window"),
    EventField("d", "data"),
)


class LedgerField(NamedTuple):
    """One field of a ledger stream entry."""

    #: the field's name in the stream (short: every entry carries it)
    name: str
    #: the ``spendgate_ledger`` column it fills
    column: str
    #: every entry has it (the others may be empty: read as absent)
    required: bool


#: the fields of a ledger entry, in the order the staging table holds them.
#: Lua: ``F_<COLUMN>`` is the stream name of each.
LEDGER_FIELDS = (
    LedgerField("e", "entry_id", True),
    LedgerField("k", "kind", True),
    LedgerField("t", "occurred_at", True),
    # every kind names its user but an adjust of a project or the global scope
    # (the table checks it: user_id IS NOT NULL OR kind = 'adjust')
    LedgerField("u", "user_id", False),
    LedgerField("p", "project_id", False),
    LedgerField("a", "amount", True),
    LedgerField("m", "model", False),
    LedgerField("md", "metadata", False),
    LedgerField("i", "idempotency_key", False),
    LedgerField("l", "lease_id", False),
    LedgerField("est", "estimate", False),
    LedgerField("late", "late", False),
    LedgerField("pv", "price_version", False),
    LedgerField("ln", "link_id", False),
    LedgerField("g", "grant_id", False),
    LedgerField("tm", "team_id", False),
    LedgerField("sc", "scope", False),
    LedgerField("w", "window", False),
    # a charge (spend, settle) that a plan's free allowance paid part of: that
    # part (the rest came off the grants and the balance)
    LedgerField("au", "allowance_used", False),
)

#: column -> stream field name
FIELD = {field.column: field.name for field in LEDGER_FIELDS}


def lua_constants() -> dict[str, int | str]:
    """The protocol as Lua constants: reply codes ``R_*``, window codes
    ``W_*`` and names ``WN_*``, team refusal scopes ``SC_*``, hold states
    ``HOLD_*``, ledger kinds ``KIND_*``, event types ``EV_*`` and event
    field names ``EF_*``, ledger field names ``F_*``,
    the spellings of caps (``NO_CAP``, ``LIMIT_KEEP``, ``LIMIT_DEFAULT``),
    a never-expiring grant's expiry (``GRANT_NEVER``), the cap actions'
    letters ``CA_*`` and names ``CAN_*``, the thresholds' scale
    (``THRESHOLD_SCALE``) and the mark of a replay's warnings
    (``WARNED_MARK``)."""
    constants: dict[str, int | str] = {}
    constants.update({f"R_{reply.name}": int(reply) for reply in Reply})
    constants.update({f"W_{window.name}": int(window) for window in WindowCode})
    constants.update(
        {f"WN_{WindowCode(code).name}": name for code, name in WINDOW_NAMES.items()}
    )
    constants.update({f"SC_{scope.name}": int(scope) for scope in TeamScope})
    constants.update({f"HOLD_{state.name}": str(state) for state in HoldState})
    constants.update({f"KIND_{kind.name}": str(kind) for kind in LedgerKind})
    constants.update({f"EV_{event.name}": str(event) for event in EventType})
    constants.update(
        {f"EF_{field.attribute.upper()}": field.name for field in EVENT_FIELDS}
    )
    constants.update(
        {f"F_{field.column.upper()}": field.name for field in LEDGER_FIELDS}
    )
    constants.update(
        {"NO_CAP": NO_CAP, "LIMIT_KEEP": LIMIT_KEEP, "LIMIT_DEFAULT": LIMIT_DEFAULT}
    )
    constants["GRANT_NEVER"] = GRANT_NEVER_MS
    constants.update(
        {f"CA_{action.name}": letter for action, letter in CAP_ACTION_LETTERS.items()}
    )
    constants.update({f"CAN_{action.name}": str(action) for action in CapAction})
    constants["THRESHOLD_SCALE"] = THRESHOLD_SCALE
    constants["WARNED_MARK"] = WARNED_MARK
    return constants
