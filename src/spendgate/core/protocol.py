"""The protocol between Python and the Lua scripts, defined once.

Everything both sides must agree on lives here: the scripts' reply codes,
the window codes of a refusal, the states of a hold record, the ledger's
entry kinds and fields, and each operation's KEYS and ARGV by name. The
scripts receive these as Lua constants when they are loaded
(:func:`lua_constants`, used by :mod:`spendgate.core.scripts`), the flusher
and the SQL read the ledger's fields from :data:`LEDGER_FIELDS`, and the
spool stores a fact's arguments by the names of :data:`OPERATIONS`. The key
layout is built in one place too, :mod:`spendgate.core.keys`, which hands its
parts to the scripts the same way. ``tests/test_protocol_contract.py`` reads
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
    #: plan}`` (priced again, retried); use_feature: the user's plan is not
    #: the one expected: ``{STALE_PRICE, the user's plan}`` (retried)
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
#: stream entry id: the script that crosses a threshold writes it once.
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
)

#: column -> stream field name
FIELD = {field.column: field.name for field in LEDGER_FIELDS}


class Operation(NamedTuple):
    """One script's calling convention: its KEYS and ARGV, by name, in order,
    and the reply codes it may answer (a contract test reads the script)."""

    #: what each KEYS[i] is
    keys: tuple[str, ...]
    #: what each ARGV[i] is
    args: tuple[str, ...]
    #: the reply codes the script may answer
    replies: frozenset[Reply]
    #: a fact: spooled when Redis does not take it, replayed later
    fact: bool = False


#: the arguments a credit gained with grants, and what a credit spooled
#: before them stands for (a never-expiring purchase of priority 0)
CREDIT_GRANT_ARGS = ("expires_ms", "priority", "grant_kind")
CREDIT_GRANT_DEFAULTS: dict[str, str | int] = {
    "expires_ms": "",
    "priority": 0,
    "grant_kind": "purchase",
}

# The argument lists and answers shared by several scripts.
_ADMISSION = ("now_ms", "day", "month", "requested", "user", "project")
_FACT_HEAD = ("now_ms", "day", "day_ttl_ms", "month", "month_ttl_ms", "amount")
#: a direct charge's arguments (record; deduct adds its own after them)
_CHARGE = (
    *_FACT_HEAD,
    "fingerprint",
    "entry",
    "user",
    "project",
    "model",
    "metadata",
    "idempotency_key",
)
_ADMITS = frozenset({Reply.OK, Reply.REFUSED})
_IDEMPOTENT = frozenset({Reply.OK, Reply.REPLAYED, Reply.CONFLICT})
_LEASE = frozenset({Reply.OK, Reply.UNKNOWN_LEASE})

#: every operation, one ``lua/<name>.lua`` each
OPERATIONS: dict[str, Operation] = {
    "check": Operation(("balance",), _ADMISSION, _ADMITS),
    "reserve": Operation(
        ("idempotency",),
        (*_ADMISSION, "fingerprint", "lease", "expires_ms"),
        _ADMITS | _IDEMPOTENT,
    ),
    "reserve_up_to": Operation(
        ("idempotency",),
        (*_ADMISSION, "fingerprint", "lease", "expires_ms", "max"),
        _ADMITS | _IDEMPOTENT,
    ),
    "settle": Operation(
        ("hold",),
        (*_FACT_HEAD, "entry", "model", "metadata", "lease"),
        _IDEMPOTENT | _LEASE | {Reply.LEASE_RELEASED},
        fact=True,
    ),
    "release": Operation(("hold",), ("lease",), _LEASE | {Reply.LEASE_SETTLED}),
    "extend": Operation(
        ("hold", "idempotency"),
        (
            "now_ms",
            "day",
            "month",
            "requested",
            "lease",
            "fingerprint",
            "expires_ms",
        ),
        _ADMITS
        | _IDEMPOTENT
        | _LEASE
        | {Reply.LEASE_RELEASED, Reply.LEASE_SETTLED, Reply.LEASE_EXPIRED},
    ),
    "record": Operation(("idempotency",), _CHARGE, _IDEMPOTENT, fact=True),
    "credit": Operation(
        ("idempotency",),
        (
            "now_ms",
            "amount",
            "fingerprint",
            "entry",
            "user",
            "metadata",
            "idempotency_key",
            *CREDIT_GRANT_ARGS,
        ),
        _IDEMPOTENT,
        fact=True,
    ),
    "refund": Operation(
        ("idempotency",),
        (
            "now_ms",
            "charge",
            "amount",
            "fingerprint",
            "entry",
            "metadata",
            "idempotency_key",
        ),
        _IDEMPOTENT | {Reply.UNKNOWN_ENTRY, Reply.REFUND_EXCEEDS},
        fact=True,
    ),
    "deduct": Operation(
        ("idempotency",),
        (*_CHARGE, "price_version", "min_balance", "plan"),
        _ADMITS | _IDEMPOTENT | {Reply.STALE_PRICE},
    ),
    "adjust": Operation(
        ("idempotency",),
        (
            "now_ms",
            "amount",
            "ttl_ms",
            "fingerprint",
            "entry",
            "scope",
            "scope_id",
            "window",
            "period",
            "window_label",
            "metadata",
            "idempotency_key",
        ),
        _IDEMPOTENT,
        fact=True,
    ),
    "use_feature": Operation(
        ("idempotency", "user_plan", "feature_use"),
        (
            "now_ms",
            "fingerprint",
            "user",
            "feature",
            "plan",
            "max_calls",
            "action",
            "window",
            "ttl_ms",
            "data",
        ),
        _ADMITS | _IDEMPOTENT | {Reply.STALE_PRICE},
    ),
    "plan_set": Operation(
        ("plans", "revision"), ("plan", "document", "max_plans"), _ADMITS
    ),
    "pricing_publish": Operation(
        ("next",), ("document", "meta", "activate"), frozenset({Reply.OK})
    ),
    "pricing_activate": Operation(
        ("active",), ("version",), frozenset({Reply.OK, Reply.UNKNOWN_VERSION})
    ),
    # (set_limits, usage, the price book and plan reads answer values, no
    # reply code)
    "pricing_get": Operation(("active",), ("version",), frozenset()),
    "pricing_list": Operation(("next",), ("first", "count"), frozenset()),
    "set_limits": Operation(
        ("limits",), ("daily", "monthly", "per_minute", "weekly"), frozenset()
    ),
    "plans_get": Operation(("plans", "revision"), (), frozenset()),
    "plan_assign": Operation(("user_plan",), ("assignment",), frozenset()),
    "plan_read": Operation(("user_plan", "counter"), ("mode", "field"), frozenset()),
    "usage": Operation(
        ("balance",), ("now_ms", "day", "month", "user", "project"), frozenset()
    ),
    # (the grants' reads and the sweep answer values too)
    "balance": Operation(("balance",), ("now_ms", "user", "count"), frozenset()),
    "grants_sweep": Operation(
        ("due",),
        ("now_ms", "dry_run", "users_offset", "grants_offset", "budget"),
        frozenset(),
    ),
}

#: the operations that are facts (spooled while Redis is away)
FACT_OPERATIONS = frozenset(name for name, op in OPERATIONS.items() if op.fact)


def named_args(operation: str, args: tuple[str | int, ...]) -> dict[str, str | int]:
    """An operation's ARGV as a mapping from argument name to value.

    :raise ValueError: when ``args`` does not have the operation's length
    """
    names = OPERATIONS[operation].args
    if len(args) != len(names):
        raise ValueError(f"{operation} takes {len(names)} arguments, not {len(args)}")
    return dict(zip(names, args, strict=True))


def positional_args(
    operation: str, named: dict[str, str | int]
) -> tuple[str | int, ...]:
    """An operation's ARGV, in order, from its named arguments.

    :raise ValueError: when a name is missing or unknown
    """
    names = OPERATIONS[operation].args
    if set(named) != set(names):
        raise ValueError(
            f"{operation} takes the arguments {', '.join(names)};"
            f" got {', '.join(sorted(named))}"
        )
    return tuple(named[name] for name in names)


def lua_constants() -> dict[str, int | str]:
    """The protocol as Lua constants: reply codes ``R_*``, window codes
    ``W_*`` and names ``WN_*``, hold states ``HOLD_*``, ledger kinds
    ``KIND_*``, event types ``EV_*`` and event field names ``EF_*``, ledger
    field names ``F_*``,
    the spellings of caps (``NO_CAP``, ``LIMIT_KEEP``, ``LIMIT_DEFAULT``) and
    a never-expiring grant's expiry (``GRANT_NEVER``)."""
    constants: dict[str, int | str] = {}
    constants.update({f"R_{reply.name}": int(reply) for reply in Reply})
    constants.update({f"W_{window.name}": int(window) for window in WindowCode})
    constants.update(
        {f"WN_{WindowCode(code).name}": name for code, name in WINDOW_NAMES.items()}
    )
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
    return constants
