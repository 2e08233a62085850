"""Every reply code an operation may answer is decoded (spendgate.core.protocol).

At run time: every reply code each operation may answer is fed to the public
method that sent it (the store answering a canned reply, from
tests/protocol_helpers.py), which must turn it into a value or one of
spendgate's own errors, never crash on it. The canned replies cover every
reply code each operation declares, and the threshold crossings a charge's
reply carries are decoded as its warnings. That the scripts and Python agree
when the scripts are read is tests/test_protocol_contract.py's.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import pytest

from protocol_helpers import _BOOK, _CALLS, _CANNED
from spendgate import BudgetConfig, BudgetManager, SpendgateError
from spendgate.core.operations import OPERATIONS
from spendgate.core.protocol import Reply


def test_the_canned_replies_cover_every_declared_reply() -> None:
    for name, op in OPERATIONS.items():
        assert set(_CANNED.get(name, {})) == set(op.replies), name


@pytest.mark.parametrize(
    ("operation", "reply"),
    [(name, reply) for name, replies in _CANNED.items() for reply in replies],
)
@pytest.mark.parametrize("model_caps", [False, True])
async def test_every_reply_code_is_decoded(
    operation: str, reply: Reply, model_caps: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = BudgetManager(BudgetConfig(model_caps=model_caps))
    sent: list[str] = []

    async def canned(op: str, keys: Any, args: Any, **options: Any) -> list[Any]:
        assert len(keys) == len(OPERATIONS[op].keys)
        # (the hooked arguments only with their feature on: model_caps)
        hooked = len(OPERATIONS[op].hooked) if budget.config.model_caps else 0
        assert len(args) == len(OPERATIONS[op].args) + hooked
        if op == "pricing_get" and operation != op:
            if operation == "pricing_activate":  # (loading what it activated)
                return [b"1", b"1", json.dumps(_BOOK).encode(), None]
            return [None, None, None, None]  # (a deduct reading the book: none)
        sent.append(op)
        return _CANNED[operation][reply]

    monkeypatch.setattr(budget._store, "run", canned)
    # (no price book active, as just read: a deduct sends only its own script)
    budget._active = (None, time.monotonic())
    try:
        result = await _CALLS[operation](budget)
    except SpendgateError as exc:
        # a refusal, a conflict or a lease state: the caller's to handle
        assert reply not in (Reply.OK, Reply.REPLAYED), exc
    else:
        assert reply in (Reply.OK, Reply.REPLAYED)
        if reply is Reply.REPLAYED and hasattr(result, "replayed"):
            assert result.replayed
        if operation == "credit":
            assert result.balance == Decimal(5)
    # (a deduct priced with a book that is no longer active is priced again)
    # (a team refund of a charge counted in another day than its id's:
    # again with that day's keys, once)
    # (a refund, settle, release or extend whose record a rebucketing moved: again
    # in that bucket, once; a team's never moves)
    again = {Reply.STALE_PRICE: 3, Reply.CHARGE_DAY: 2}
    if operation in ("refund", "settle", "release", "extend"):
        again[Reply.MOVED] = 2
    assert sent == [operation] * again.get(reply, 1)
    await budget.aclose()


#: a charge's reply with cap actions: what it crossed in warn scopes comes
#: last, flat (scope index, window code, threshold, limit, spent for each)
_CROSSED = [1, 1, 500000, 2000000, 1000000, 2, 2, 1000000, 4000000, 4000000]
_WITH_CROSSINGS: dict[str, list[Any]] = {
    "record": [0, b"entry|1700000000000|", _CROSSED],
    "deduct": [0, b"entry|1700000000000|5000000|1000000||", _CROSSED],
    # (the allowance the settle drew on comes before the crossings)
    "settle": [0, b"u", b"", 0, 1000000, 0, _CROSSED],
}


@pytest.mark.parametrize("operation", sorted(_WITH_CROSSINGS))
async def test_a_charges_crossings_are_decoded_as_warnings(
    operation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = BudgetManager()

    async def canned(op: str, keys: Any, args: Any, **options: Any) -> list[Any]:
        if op == "pricing_get":
            return [None, None, None, None]
        return _WITH_CROSSINGS[operation]

    monkeypatch.setattr(budget._store, "run", canned)
    budget._active = (None, time.monotonic())
    result = await _CALLS[operation](budget)
    # (record and deduct are sent without a project here: scope 2 of 2 is
    # the global scope)
    assert [
        (w.scope, w.scope_id, w.window, w.threshold, w.limit, w.spent)
        for w in result.warnings
    ] == [
        ("user", "u", "daily", Decimal("0.5"), Decimal(2), Decimal(1)),
        ("global", None, "monthly", Decimal(1), Decimal(4), Decimal(4)),
    ]
