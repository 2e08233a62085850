"""What the run-time protocol tests share (tests/test_protocol_replies.py):
``_CANNED``, a reply of each code each operation may answer, as its script
would; ``_CALLS``, the public call that sends each operation; the lease,
team entry and price book (``_BOOK``) those calls name; and
``_on_a_plan``, a manager that knows a user's plan without a round trip."""

from __future__ import annotations

from typing import Any

from spendgate import BudgetManager
from spendgate.core.protocol import Reply
from spendgate.models import Lease
from spendgate.ops.escrow import deposit, give_back, lend, reclaim
from spendgate.rebucket import purge_holds

# -- every reply code decoded ----------------------------------------------------

_LEASE = Lease("0" * 28, "u", None, 1_000_000, 2_000_000_000_000)
#: a team charge's entry id: "<id>.<team id>", its id's time 1700000000000 (ms)
_TEAM_ENTRY = b"018bcfe56800" + b"0" * 16 + b".t"
_TEAM_LEASE = Lease(
    "0" * 28 + ".t", "u", None, 1_000_000, 2_000_000_000_000, team_id="t"
)

_REFUND_REPLIES: dict[Reply, list[Any]] = {
    Reply.OK: [0, b"entry|1700000000000|1000000|0|5000000"],
    Reply.REPLAYED: [2, b"first|1700000000000|1000000|0|"],
    Reply.CONFLICT: [3],
    Reply.UNKNOWN_ENTRY: [10],
    Reply.REFUND_EXCEEDS: [11, b"0"],
    Reply.MOVED: [17, b"0"],
}

#: a reply of each code each operation may answer, as the script would
_CANNED: dict[str, dict[Reply, list[Any]]] = {
    # (a per-minute refusal: when the scope frees up comes last)
    "check": {
        Reply.OK: [0, -1],
        Reply.REFUSED: [1, 1, 5, 5, 5, 0, 1700000060000],
        # (the user's plan, "" for none, when not the one expected)
        Reply.STALE_PRICE: [7, b""],
    },
    "reserve": {
        Reply.OK: [0, b"lease|2000000000000"],
        Reply.REFUSED: [1, 2, 2, 5, 5, 0],
        Reply.REPLAYED: [2, b"first|2000000000000"],
        Reply.CONFLICT: [3],
        Reply.STALE_PRICE: [7, b""],
    },
    "reserve_up_to": {
        Reply.OK: [0, b"lease|2000000000000|500000"],
        # (a per-model cap's refusal: 0, then the model)
        Reply.REFUSED: [1, 1, 2, 5, 5, 0, 0, b"gpt-4o"],
        Reply.REPLAYED: [2, b"first|2000000000000|500000"],
        Reply.CONFLICT: [3],
        Reply.STALE_PRICE: [7, b""],
    },
    "settle": {
        Reply.OK: [0, b"u", b"", 0, 1000000, 500000],
        Reply.REPLAYED: [2, b"u", b"p", b"entry|1700000000000|1|1000000|500000"],
        Reply.CONFLICT: [3, b"2000000"],
        Reply.UNKNOWN_LEASE: [4],
        Reply.LEASE_RELEASED: [5],
        Reply.STALE_PRICE: [7, b"u", b""],
        Reply.MOVED: [17, b"0:run"],
    },
    "release": {
        Reply.OK: [0, 1],
        Reply.UNKNOWN_LEASE: [4],
        Reply.LEASE_SETTLED: [6],
        Reply.MOVED: [17, b"0:run"],
    },
    "extend": {
        Reply.OK: [0, b"2000000|2000000000000", b"u", b""],
        Reply.REFUSED: [1, 1, 1, 5, 5, 0, b"u", b""],
        Reply.REPLAYED: [2, b"2000000|2000000000000", b"u", b"p"],
        Reply.CONFLICT: [3],
        Reply.UNKNOWN_LEASE: [4],
        Reply.LEASE_RELEASED: [5],
        Reply.LEASE_SETTLED: [6],
        Reply.LEASE_EXPIRED: [9],
        Reply.STALE_PRICE: [7, b"u", b""],
        Reply.MOVED: [17, b"0:run"],
    },
    "record": {
        Reply.OK: [0, b"entry|1700000000000|"],
        Reply.REPLAYED: [2, b"first|1700000000000|500000"],
        Reply.CONFLICT: [3],
        Reply.STALE_PRICE: [7, b""],
    },
    "credit": {
        Reply.OK: [0, b"entry|1700000000000|5000000"],
        Reply.REPLAYED: [2, b"first|1700000000000|5000000"],
        Reply.CONFLICT: [3],
        Reply.PAST_EXPIRY: [18],
    },
    "deduct": {
        Reply.OK: [0, b"entry|1700000000000|5000000|1000000||"],
        Reply.REFUSED: [1, 1, 3, 5, 0, 0],
        Reply.REPLAYED: [2, b"first|1700000000000|5000000|1000000||500000"],
        Reply.CONFLICT: [3],
        Reply.STALE_PRICE: [7, b"2"],
    },
    "refund": _REFUND_REPLIES,
    "adjust": {
        Reply.OK: [0, b"entry|1700000000000|-1000000|0"],
        Reply.REPLAYED: [2, b"first|1700000000000|-1000000|0"],
        Reply.CONFLICT: [3],
    },
    "use_feature": {
        Reply.OK: [0, b"1|0"],
        Reply.REFUSED: [1, 1, 1],
        Reply.REPLAYED: [2, b"1|0"],
        Reply.CONFLICT: [3],
        Reply.STALE_PRICE: [7, b"1700000000000|pro"],
    },
    "plan_set": {Reply.OK: [0, 1], Reply.REFUSED: [1, 1000]},
    "pricing_publish": {Reply.OK: [0, 1]},
    "pricing_activate": {Reply.OK: [0, b""], Reply.UNKNOWN_VERSION: [8]},
    "pricing_mirror": {Reply.OK: [0]},
    "escrow_lend": {Reply.OK: [0, 30, 30]},
    "escrow_return": {Reply.OK: [0, 0]},
    "escrow_deposit": {Reply.OK: [0, 30]},
    "escrow_reclaim": {Reply.OK: [0, 20, 10]},
    "holds_purge": {Reply.OK: [0, 0, b""]},
    # teams (a team refusal's scope is 101, the pool, or 102, the member)
    "team_reserve": {
        Reply.OK: [0, b"lease.t|2000000000000"],
        Reply.REFUSED: [1, 102, 1, 5, 5, 0],
        Reply.REPLAYED: [2, b"first.t|2000000000000"],
        Reply.CONFLICT: [3],
        Reply.NOT_A_MEMBER: [12],
        Reply.UNKNOWN_TEAM: [13],
    },
    "team_reserve_up_to": {
        Reply.OK: [0, b"lease.t|2000000000000|500000"],
        Reply.REFUSED: [1, 101, 3, 5, 0, 0],
        Reply.REPLAYED: [2, b"first.t|2000000000000|500000"],
        Reply.CONFLICT: [3],
        Reply.NOT_A_MEMBER: [12],
        Reply.UNKNOWN_TEAM: [13],
    },
    "team_record": {
        Reply.OK: [0, _TEAM_ENTRY + b"|1700000000000"],
        Reply.REPLAYED: [2, _TEAM_ENTRY + b"|1700000000000"],
        Reply.CONFLICT: [3],
        Reply.NOT_A_MEMBER: [12],
        Reply.UNKNOWN_TEAM: [13],
    },
    "team_deduct": {
        Reply.OK: [0, _TEAM_ENTRY + b"|1700000000000|5000000|1000000|"],
        Reply.REFUSED: [1, 101, 3, 5, 0, 0],
        Reply.REPLAYED: [2, _TEAM_ENTRY + b"|1700000000000|5000000|1000000|"],
        Reply.CONFLICT: [3],
        Reply.STALE_PRICE: [7, b"2"],
        Reply.NOT_A_MEMBER: [12],
        Reply.UNKNOWN_TEAM: [13],
    },
    "team_settle": {
        Reply.OK: [0, b"u", b"", 0, 1000000],
        Reply.REPLAYED: [2, b"u", b"p", _TEAM_ENTRY + b"|1700000000000|1|1000000"],
        Reply.CONFLICT: [3, b"2000000"],
        Reply.UNKNOWN_LEASE: [4],
        Reply.LEASE_RELEASED: [5],
    },
    # (user and project last, as extend's; a member's refusal names them too)
    "team_extend": {
        Reply.OK: [0, b"2000000|2000000000000", b"u", b""],
        Reply.REFUSED: [1, 102, 1, 5, 5, 0, b"u", b""],
        Reply.REPLAYED: [2, b"2000000|2000000000000", b"u", b"p"],
        Reply.CONFLICT: [3],
        Reply.UNKNOWN_LEASE: [4],
        Reply.LEASE_RELEASED: [5],
        Reply.LEASE_SETTLED: [6],
        Reply.LEASE_EXPIRED: [9],
        Reply.NOT_A_MEMBER: [12, b"u", b""],
        Reply.UNKNOWN_TEAM: [13, b"u", b"p"],
    },
    "team_refund": {
        **_REFUND_REPLIES,
        # (every time: the call is made twice, then fails)
        Reply.CHARGE_DAY: [15, b"20231114"],
    },
    "team_release": {
        Reply.OK: [0, 1],
        Reply.UNKNOWN_LEASE: [4],
        Reply.LEASE_SETTLED: [6],
    },
    "team_create": {Reply.OK: [0, b"1700000000000"], Reply.TEAM_EXISTS: [14]},
    "team_credit": {
        Reply.OK: [0, b"entry|1700000000000|5000000"],
        Reply.REPLAYED: [2, b"first|1700000000000|5000000"],
        Reply.CONFLICT: [3],
        Reply.UNKNOWN_TEAM: [13],
    },
    "team_member_set": {Reply.OK: [0, 1], Reply.UNKNOWN_TEAM: [13]},
    "team_member_remove": {
        Reply.OK: [0],
        Reply.NOT_A_MEMBER: [12],
        Reply.UNKNOWN_TEAM: [13],
    },
    "team_get": {
        Reply.OK: [
            0,
            [b"Eng", b"1700000000000", b"5000000", b"0"],
            [b"u", b"member|-1|2000000"],
            [b"u", b"1000000"],
            [],
            [b"u", b"3000000"],
        ],
        Reply.UNKNOWN_TEAM: [13],
    },
}

_BOOK = {"version": 1, "models": {"_default": "input_tokens * 0.001"}}


def _on_a_plan(budget: BudgetManager) -> BudgetManager:
    """``budget`` knowing user "u" on plan "pro", whose feature "f" is
    limited (as last read: no round trip before the call's own)."""
    from spendgate.plans.definitions import plan_document

    limits = {"f": {"max_calls": 1}}
    _, plan = plan_document("pro", None, 0, "monthly", None, None, limits)
    budget._plans().load("1", {"pro": plan})
    budget._plans().remember("u", "1|pro")
    budget._plans_rev_seen = "1"
    return budget


_CALLS = {
    "check": lambda b: b.check_availability("u", "p", "1"),
    "reserve": lambda b: b.reserve("u", "1", idempotency_key="k"),
    "reserve_up_to": lambda b: b.reserve_up_to("u", "1", idempotency_key="k"),
    "settle": lambda b: b.settle(_LEASE, "1"),
    "release": lambda b: b.release(_LEASE),
    "extend": lambda b: b.extend(_LEASE.id, "1", idempotency_key="k"),
    "record": lambda b: b.record_spend("u", "1", idempotency_key="k"),
    "credit": lambda b: b.add_credits("u", "5", idempotency_key="k"),
    "deduct": lambda b: b.deduct("u", "1", idempotency_key="k"),
    "refund": lambda b: b.refund("e" * 28, "1", idempotency_key="k"),
    "adjust": lambda b: b.adjust_usage("user", "u", "-1", idempotency_key="k"),
    "use_feature": lambda b: _on_a_plan(b).use_feature("u", "f", "k"),
    "plan_set": lambda b: b.set_plan("pro"),
    "pricing_publish": lambda b: b.publish_pricing(_BOOK),
    "pricing_activate": lambda b: b.activate_pricing(1),
    # (sent by activate_pricing on a sharded deployment only; nothing to decode)
    "pricing_mirror": lambda b: b._store.run(
        "pricing_mirror", (b.keys.price_active,), ("1",)
    ),
    # (escrow's root side, sent on a sharded deployment only)
    "escrow_lend": lambda b: lend(
        b._store,
        b.keys,
        "project",
        "p",
        "d",
        cap=100,
        shortfall=10,
        chunk=30,
        ttl_ms=1,
        loan_id="l",
    ),
    "escrow_return": lambda b: give_back(
        b._store, b.keys, "project", "p", "d", amount=1, return_id="r"
    ),
    "escrow_deposit": lambda b: deposit(
        b._store, b.keys, "project", "p", "d", amount=1, loan_id="l", ttl_ms=1
    ),
    "escrow_reclaim": lambda b: reclaim(
        b._store, b.keys, "project", "p", "d", spent_key="s", reclaim_id="c", now_ms=1
    ),
    # (a rebucketing's, before it moves anything)
    "holds_purge": lambda b: purge_holds(b, b.keys.holds, 1),
    "team_reserve": lambda b: b.reserve("u", "1", idempotency_key="k", team_id="t"),
    "team_reserve_up_to": lambda b: b.reserve_up_to(
        "u", "1", idempotency_key="k", team_id="t"
    ),
    "team_record": lambda b: b.record_spend("u", "1", idempotency_key="k", team_id="t"),
    "team_deduct": lambda b: b.deduct("u", "1", team_id="t", idempotency_key="k"),
    "team_settle": lambda b: b.settle(_TEAM_LEASE, "1"),
    "team_extend": lambda b: b.extend(_TEAM_LEASE.id, "1", idempotency_key="k"),
    "team_release": lambda b: b.release(_TEAM_LEASE.id),
    "team_refund": lambda b: b.refund(_TEAM_ENTRY.decode(), "1", idempotency_key="k"),
    "team_create": lambda b: b.create_team("t", "Eng", 5),
    "team_credit": lambda b: b.credit_team("t", "5", idempotency_key="k"),
    "team_member_set": lambda b: b.add_team_member("t", "u", daily_cap=2),
    "team_member_remove": lambda b: b.remove_team_member("t", "u"),
    "team_get": lambda b: b.get_team("t"),
}
