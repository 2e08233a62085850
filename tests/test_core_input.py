"""Bad input gets a clear typed error and changes nothing; hostile ids never alias.

Every public call is fed NaN, infinities, negatives, bools, None, strings that
are not numbers, ``Decimal('NaN')`` and absurd magnitudes; the error type is
checked and the whole key space of the test's prefix is compared before and
after. Ids that look like key syntax (``x:project:p``, braces, newlines, glob
characters, scope names, 512 characters) are used side by side and each sees
only its own spend; empty, blank, ``None``, non-``str`` and over-long ids are
rejected. Both backends.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from conftest import MakeBudget, deployment_state, stream_entries
from spendgate import (
    BudgetManager,
    InvalidAmountError,
    InvalidArgumentError,
    InvalidIdError,
    InvalidIdTypeError,
)


class _Opaque:
    """A value of no number or JSON type, whose repr (a test id) is the same
    in every process: the suite's workers must collect the same ids."""

    def __repr__(self) -> str:
        return "<opaque object>"


BAD_AMOUNTS: list[Any] = [
    float("nan"),
    float("inf"),
    float("-inf"),
    Decimal("NaN"),
    Decimal("sNaN"),
    Decimal("Infinity"),
    Decimal("-Infinity"),
    -1,
    -0.000001,
    Decimal("-0.01"),
    "-5",
    True,
    False,
    None,
    "abc",
    "",
    "1e400",
    "NaN",
    "inf",
    10**30,
    Decimal("1e1000"),
    1e300,
    [1],
    {"amount": 1},
    _Opaque(),
    b"1",
    complex(1, 0),
    # a number too large even to turn into text (the error message must not fail)
    10**5000,
    # Decimal() reads these; an amount is plain ASCII
    "1_000",
    "\u0661\u0662",  # Arabic-Indic digits
    "\uff11",  # a fullwidth digit
]


class _NumpyLikeFloat(float):
    """A float subclass whose repr is not a number, as numpy 2's float64."""

    def __repr__(self) -> str:
        return f"np.float64({float.__repr__(self)})"


async def test_a_float_subclass_is_read_by_its_value(budget: BudgetManager) -> None:
    record = await budget.record_spend("alice", _NumpyLikeFloat(0.1))
    assert record.amount == Decimal("0.1")


def _amount_id(value: object) -> str:
    if isinstance(value, int) and value.bit_length() > 1000:
        return f"int of {value.bit_length()} bits"
    return repr(value)


@pytest.mark.parametrize("amount", BAD_AMOUNTS, ids=_amount_id)
async def test_bad_amounts_are_rejected_and_change_nothing(
    make_budget: MakeBudget, amount: Any
) -> None:
    budget = make_budget(daily_user_limit="10", enforce_balance=False)
    await budget.record_spend("alice", "1", project_id="p")
    lease = await budget.reserve("alice", "1")
    before = await deployment_state(budget)

    calls = [
        lambda: budget.check_availability("alice", "p", amount),
        lambda: budget.record_spend("alice", amount, "p"),
        lambda: budget.reserve("alice", amount),
        lambda: budget.settle(lease, amount),
        lambda: budget.add_credits("alice", amount),
        lambda: budget.set_limits("user", "alice", daily=amount),
    ]
    for call in calls:
        if amount is None and call is calls[-1]:
            continue  # None is a valid limit: "no cap"
        with pytest.raises(InvalidAmountError):
            await call()
    assert await deployment_state(budget) == before


def test_invalid_amount_error_is_a_value_error() -> None:
    assert issubclass(InvalidAmountError, ValueError)
    assert issubclass(InvalidIdError, ValueError)
    assert issubclass(InvalidIdTypeError, TypeError)


async def test_largest_amount_is_accepted(budget: BudgetManager) -> None:
    record = await budget.record_spend("alice", "1000000000")
    assert record.amount == Decimal("1000000000")
    with pytest.raises(InvalidAmountError):
        await budget.record_spend("alice", "1000000000.000001")


HOSTILE_IDS = [
    "x:project:p",
    "x",
    "x:",
    ":x",
    "u:x",
    "e:u:x",
    "{sg}",
    "a{b}c",
    "}{",
    "line\nbreak",
    "tab\tand\r",
    "*",
    "?",
    "[a-z]",
    "user",
    "project",
    "global",
    "g",
    "",  # replaced below: empty is rejected, tested separately
    "x" * 512,
    "ünïcødé-✓",
    "null\x00byte",
    "a b",
    "d:20260315:u:x",
    "|pipe|",
]
HOSTILE_IDS = [i for i in HOSTILE_IDS if i]


async def test_hostile_ids_never_alias(make_budget: MakeBudget) -> None:
    budget = make_budget(daily_user_limit="100")
    for n, user in enumerate(HOSTILE_IDS, start=1):
        await budget.record_spend(user, n, project_id=user)
        await budget.set_limits("user", user, daily=str(1000 + n))
    total = sum(range(1, len(HOSTILE_IDS) + 1))
    for n, user in enumerate(HOSTILE_IDS, start=1):
        usage = await budget.get_usage(user, user)
        assert usage["user"].daily.spent == Decimal(n), user
        assert usage["project"].daily.spent == Decimal(n), user
        assert usage["user"].daily.limit == Decimal(1000 + n), user
        assert usage["global"].daily.spent == Decimal(total)


async def test_user_and_project_with_the_same_id_are_separate(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(daily_user_limit="1", daily_project_limit="100")
    await budget.record_spend("same", "1", project_id="other")
    usage = await budget.get_usage("x", "same")
    assert usage["project"].daily.spent == 0
    assert await budget.check_availability("x", "same", "1") is True
    await budget.record_spend("x", "30", project_id="same")
    usage = await budget.get_usage("same")
    assert usage["user"].daily.spent == Decimal("1")


@pytest.mark.parametrize(
    ("user", "error"),
    [
        ("", InvalidIdError),
        ("   ", InvalidIdError),
        ("\n", InvalidIdError),
        ("x" * 513, InvalidIdError),
        ("x" * 100_000, InvalidIdError),
        ("\ud800", InvalidIdError),
        (None, InvalidIdTypeError),
        (123, InvalidIdTypeError),
        (b"alice", InvalidIdTypeError),
        (["alice"], InvalidIdTypeError),
    ],
    ids=lambda v: repr(v)[:20],
)
async def test_bad_ids_are_rejected_and_change_nothing(
    make_budget: MakeBudget, user: Any, error: type[Exception]
) -> None:
    budget = make_budget()
    before = await deployment_state(budget)
    calls = [
        lambda: budget.check_availability(user),
        lambda: budget.record_spend(user, "1"),
        lambda: budget.reserve(user, "1"),
        lambda: budget.add_credits(user, "1"),
        lambda: budget.get_usage(user),
        lambda: budget.set_limits("user", user, daily="1"),
    ]
    for call in calls:
        with pytest.raises(error):
            await call()
    if user is not None:  # None means "not given" for these
        with pytest.raises(error):
            await budget.record_spend("alice", "1", project_id=user)
        with pytest.raises(error):
            await budget.record_spend("alice", "1", idempotency_key=user)
        with pytest.raises(error):
            await budget.settle(user, "1")
        with pytest.raises(error):
            await budget.release(user)
    assert await deployment_state(budget) == before


async def test_id_length_limit_is_configurable(make_budget: MakeBudget) -> None:
    budget = make_budget(max_id_length=16)
    await budget.record_spend("x" * 16, "1")
    with pytest.raises(InvalidIdError, match="above the limit of 16"):
        await budget.record_spend("x" * 17, "1")


@pytest.mark.parametrize(
    "metadata",
    [
        "not a mapping",
        ["a"],
        {1: "int key"},
        {"nan": float("nan")},
        {"obj": _Opaque()},
        {"big": "x" * 9000},
        # JSON can escape a lone surrogate, UTF-8 (and Postgres) cannot hold it
        {"s": "\udfff"},
        {"\ud800": "key"},
        {"nested": ["ok", "\udc00"]},
    ],
    ids=repr,
)
async def test_bad_metadata_is_rejected(make_budget: MakeBudget, metadata: Any) -> None:
    budget = make_budget()
    with pytest.raises(InvalidArgumentError):
        await budget.record_spend("alice", "1", metadata=metadata)
    assert await deployment_state(budget) == {}


@pytest.mark.parametrize("model", ["", "  ", "m" * 257])
async def test_bad_model_is_rejected(make_budget: MakeBudget, model: str) -> None:
    budget = make_budget()
    with pytest.raises(InvalidArgumentError):
        await budget.record_spend("alice", "1", model=model)


@pytest.mark.parametrize(
    "ttl",
    [0, -1, True, "60", 8 * 86400, float("nan"), Decimal("NaN"), Decimal("-1")],
)
async def test_bad_lease_ttl_is_rejected(make_budget: MakeBudget, ttl: Any) -> None:
    budget = make_budget()
    with pytest.raises(InvalidArgumentError):
        await budget.reserve("alice", "1", ttl_seconds=ttl)
    assert await deployment_state(budget) == {}


async def test_a_lease_ttl_may_be_a_decimal(budget: BudgetManager) -> None:
    # (money is Decimal at the API, and so may a caller's seconds be)
    lease = await budget.reserve("alice", "1", ttl_seconds=Decimal("1.5"))
    assert lease.expires_ms - budget._now_ms() in range(1000, 1501)


@pytest.mark.parametrize("scope", ["users", "", None, "GLOBAL"])
async def test_bad_scope_is_rejected(budget: BudgetManager, scope: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        await budget.set_limits(scope, "x", daily="1")


async def test_metadata_with_decimals_and_unicode_round_trips(
    budget: BudgetManager,
) -> None:
    record = await budget.record_spend(
        "alice", "1", metadata={"price": Decimal("0.1"), "note": "héllo", "tokens": 12}
    )
    entries = await stream_entries(budget)
    fields = entries[-1][1]
    assert fields[b"md"] == b'{"note":"h\\u00e9llo","price":"0.1","tokens":12}'
    assert fields[b"e"].decode() == record.entry_id


async def test_ledger_entries_hold_every_field_of_their_kind(
    budget: BudgetManager,
) -> None:
    # Empty optional fields are written empty (the flusher stores them as NULL).
    spend = await budget.record_spend("alice", "1")
    lease = await budget.reserve("bob", "2", project_id="p")
    settled = await budget.settle(lease, "1.5", model="gpt")
    entries = await stream_entries(budget)
    by_entry = {fields[b"e"].decode(): fields for _, fields in entries}
    assert by_entry[spend.entry_id] == {
        **{b"e": spend.entry_id.encode(), b"k": b"spend", b"u": b"alice"},
        **{b"t": str(spend.occurred_ms).encode(), b"a": b"1000000"},
        **{b"p": b"", b"m": b"", b"md": b"", b"i": b"", b"au": b""},
    }
    assert by_entry[settled.entry_id] == {
        **{b"e": settled.entry_id.encode(), b"k": b"settle", b"u": b"bob"},
        **{b"t": str(settled.occurred_ms).encode(), b"a": b"1500000"},
        **{b"l": lease.id.encode(), b"est": b"2000000", b"late": b"0"},
        **{b"p": b"p", b"m": b"gpt", b"md": b"", b"au": b""},
    }
