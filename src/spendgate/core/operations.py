"""Each script's calling convention, defined once: its KEYS and ARGV by
name, in order, and the reply codes it may answer (:data:`OPERATIONS`).

The spool stores a fact's arguments by these names (:func:`named_args`,
:func:`positional_args`), and ``tests/test_protocol_contract.py`` reads each
script's header and replies against them. The codes, kinds and fields the
operations speak in are :mod:`spendgate.core.protocol`'s.
"""

from __future__ import annotations

from typing import NamedTuple

from spendgate.core.protocol import Reply


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
    #: what each ARGV after :attr:`args` is: arguments sent only with the
    #: feature that reads them on (the script's lines that read them are
    #: dropped otherwise: see spendgate.core.hooks.HOOKS)
    hooked: tuple[str, ...] = ()


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
#: a refund's arguments (a team charge's adds the team and the charge's day)
_REFUND = (
    "now_ms",
    "charge",
    "amount",
    "fingerprint",
    "entry",
    "metadata",
    "idempotency_key",
)
_REFUND_REFUSALS = frozenset({Reply.UNKNOWN_ENTRY, Reply.REFUND_EXCEEDS})
_ADMITS = frozenset({Reply.OK, Reply.REFUSED})
_IDEMPOTENT = frozenset({Reply.OK, Reply.REPLAYED, Reply.CONFLICT})
_LEASE = frozenset({Reply.OK, Reply.UNKNOWN_LEASE})
#: a refund's record moved by a rebucketing (lua/_refunds.lua: refund_open)
_REFUNDS = _IDEMPOTENT | _REFUND_REFUSALS | {Reply.MOVED}
#: the user's plan was not the one expected (see lua/_allowance.lua)
_STALE = frozenset({Reply.STALE_PRICE})
#: an extend's arguments (extend.lua, team_extend.lua) and answers
_EXTEND = (
    "now_ms",
    "day",
    "month",
    "requested",
    "lease",
    "fingerprint",
    "expires_ms",
)
_EXTENDS = (
    _ADMITS
    | _IDEMPOTENT
    | _LEASE
    | {Reply.LEASE_RELEASED, Reply.LEASE_SETTLED, Reply.LEASE_EXPIRED}
)

#: the plan argument of a fact spooled before allowances: no plan applies
#: (see lua/_allowance.lua)
NO_PLAN_ARGS: dict[str, str | int] = {"plan": ""}

#: the hooked argument of the admitting scripts and of usage: the model the
#: call is for. Sent only with per-model caps on (``model_caps``): a script
#: without them never reads it, and a call does not pay for an argument it
#: does not use
_MODEL = ("model",)

#: every operation, one ``lua/<name>.lua`` each
OPERATIONS: dict[str, Operation] = {
    "check": Operation(
        ("balance",), (*_ADMISSION, "plan"), _ADMITS | _STALE, hooked=_MODEL
    ),
    "reserve": Operation(
        ("idempotency",),
        (*_ADMISSION, "fingerprint", "lease", "expires_ms", "plan"),
        _ADMITS | _IDEMPOTENT | _STALE,
        hooked=_MODEL,
    ),
    "reserve_up_to": Operation(
        ("idempotency",),
        (*_ADMISSION, "fingerprint", "lease", "expires_ms", "max", "plan"),
        _ADMITS | _IDEMPOTENT | _STALE,
        hooked=_MODEL,
    ),
    "settle": Operation(
        ("hold",),
        (*_FACT_HEAD, "entry", "model", "metadata", "lease", "plan"),
        _IDEMPOTENT | _LEASE | _STALE | {Reply.LEASE_RELEASED, Reply.MOVED},
        fact=True,
    ),
    "release": Operation(
        ("hold",), ("lease",), _LEASE | {Reply.LEASE_SETTLED, Reply.MOVED}
    ),
    "extend": Operation(
        ("hold", "idempotency"),
        (*_EXTEND, "plan"),
        _EXTENDS | _STALE | {Reply.MOVED},
    ),
    "record": Operation(
        ("idempotency",), (*_CHARGE, "plan"), _IDEMPOTENT | _STALE, fact=True
    ),
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
        _IDEMPOTENT | {Reply.PAST_EXPIRY},
        fact=True,
    ),
    "refund": Operation(("idempotency",), _REFUND, _REFUNDS, fact=True),
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
    "pricing_mirror": Operation(("active",), ("version",), frozenset({Reply.OK})),
    "escrow_lend": Operation(
        ("loans",),
        ("cap", "shortfall", "chunk", "ttl_ms", "loan"),
        frozenset({Reply.OK}),
    ),
    "escrow_return": Operation(
        ("loans",), ("amount", "returned"), frozenset({Reply.OK})
    ),
    "escrow_deposit": Operation(
        ("allowance",), ("amount", "loan", "ttl_ms"), frozenset({Reply.OK})
    ),
    "escrow_reclaim": Operation(
        ("allowance", "spent", "held"),
        ("reclaim", "now_ms"),
        frozenset({Reply.OK}),
    ),
    # (a rebucketing's: spendgate.rebucket)
    "holds_purge": Operation(("holds",), ("now_ms",), frozenset({Reply.OK})),
    # (set_limits, usage, the price book and plan reads answer values, no
    # reply code)
    "pricing_get": Operation(("active",), ("version",), frozenset()),
    "pricing_list": Operation(("next",), ("first", "count"), frozenset()),
    "set_limits": Operation(
        ("limits",),
        ("daily", "monthly", "per_minute", "weekly", "action"),
        frozenset(),
    ),
    "plans_get": Operation(("plans", "revision"), (), frozenset()),
    "plan_assign": Operation(("user_plan",), ("assignment",), frozenset()),
    "plan_read": Operation(("user_plan", "counter"), ("mode", "field"), frozenset()),
    "usage": Operation(
        ("balance",),
        ("now_ms", "day", "month", "user", "project"),
        frozenset(),
        hooked=_MODEL,
    ),
    # (the grants' reads and the sweep answer values too)
    "balance": Operation(("balance",), ("now_ms", "user", "count"), frozenset()),
    "grants_sweep": Operation(
        ("due",),
        ("now_ms", "dry_run", "users_offset", "grants_offset", "budget"),
        frozenset(),
    ),
}

# Teams (lua/team_*.lua): a team's keys come declared after the first key.
_TEAM_KEYS = ("team", "members", "member_held", "team_holds", "team_day", "team_month")
_TEAM_REFUSALS = frozenset({Reply.NOT_A_MEMBER, Reply.UNKNOWN_TEAM})
OPERATIONS.update(
    {
        "team_reserve": Operation(
            ("idempotency", *_TEAM_KEYS),
            (*_ADMISSION, "fingerprint", "lease", "expires_ms", "team"),
            _ADMITS | _IDEMPOTENT | _TEAM_REFUSALS,
            hooked=_MODEL,
        ),
        "team_reserve_up_to": Operation(
            ("idempotency", *_TEAM_KEYS),
            (*_ADMISSION, "fingerprint", "lease", "expires_ms", "max", "team"),
            _ADMITS | _IDEMPOTENT | _TEAM_REFUSALS,
            hooked=_MODEL,
        ),
        # (strict "1": a live call, refused for a non-member; "0": the
        # spool's replay of a fact, which is never refused)
        "team_record": Operation(
            ("idempotency", *_TEAM_KEYS),
            (*_CHARGE, "team", "strict"),
            _IDEMPOTENT | _TEAM_REFUSALS,
            fact=True,
        ),
        "team_deduct": Operation(
            ("idempotency", *_TEAM_KEYS),
            (*_CHARGE, "price_version", "plan", "team"),
            _ADMITS | _IDEMPOTENT | _TEAM_REFUSALS | {Reply.STALE_PRICE},
        ),
        "team_settle": Operation(
            ("hold", *_TEAM_KEYS),
            (*_FACT_HEAD, "entry", "model", "metadata", "lease", "team"),
            _IDEMPOTENT | _LEASE | {Reply.LEASE_RELEASED},
            fact=True,
        ),
        # (no plan: the pool pays, the user's allowance plays no part)
        "team_extend": Operation(
            ("hold", "idempotency", *_TEAM_KEYS),
            (*_EXTEND, "team"),
            _EXTENDS | _TEAM_REFUSALS,
        ),
        # (the team's keys of the charge's day: see lua/team_refund.lua)
        "team_refund": Operation(
            ("idempotency", "team", "team_day", "team_month"),
            (*_REFUND, "team", "day"),
            _REFUNDS | {Reply.CHARGE_DAY},
            fact=True,
        ),
        "team_release": Operation(
            ("hold", "team", "member_held", "team_holds"),
            ("lease", "team"),
            _LEASE | {Reply.LEASE_SETTLED},
        ),
        "team_create": Operation(
            ("team",),
            ("now_ms", "team", "name", "balance", "entry"),
            frozenset({Reply.OK, Reply.TEAM_EXISTS}),
        ),
        "team_credit": Operation(
            ("idempotency", "team"),
            (
                "now_ms",
                "amount",
                "fingerprint",
                "entry",
                "metadata",
                "idempotency_key",
                "team",
            ),
            _IDEMPOTENT | {Reply.UNKNOWN_TEAM},
            fact=True,
        ),
        "team_member_set": Operation(
            ("team", "members"),
            ("user", "member"),
            frozenset({Reply.OK, Reply.UNKNOWN_TEAM}),
        ),
        "team_member_remove": Operation(
            ("team", "members"),
            ("user",),
            frozenset({Reply.OK}) | _TEAM_REFUSALS,
        ),
        "team_get": Operation(
            ("team", "members", "member_held", "team_holds", "team_day", "team_month"),
            ("now_ms",),
            frozenset({Reply.OK, Reply.UNKNOWN_TEAM}),
        ),
    }
)

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
