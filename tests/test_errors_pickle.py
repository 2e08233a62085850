"""Every spendgate error survives pickling and copying as it is.

How: one instance of each class of the outcome table (the server tests'
``INSTANCES``), plus the argument errors, and a refusal raised by a real
``check_availability`` (both backends), go through ``pickle`` and
``copy.copy``: the copy must be of the same class, with the same message
and the same fields. Pickling used to call the class again with the
message as its first argument: a refusal came back as "User balance limit
exceeded ... None limit exceeded: limit None ...", a ``LeaseStateError``
raised ``TypeError`` on unpickling, so an error crossing a process (a
``ProcessPoolExecutor``, a task queue) was garbled or lost.
"""

from __future__ import annotations

import copy
import pickle
from decimal import Decimal

import pytest

from conftest import MakeBudget
from spendgate import BudgetExceededError
from spendgate.errors import (
    InvalidAmountError,
    InvalidIdError,
    SpendgateError,
)
from test_server_errors import INSTANCES

ERRORS: list[SpendgateError] = [
    *INSTANCES.values(),
    InvalidAmountError("x", "not a number"),
    InvalidIdError("user_id", "empty or blank"),
]


def _same(copied: BaseException, error: BaseException) -> None:
    assert type(copied) is type(error)
    assert str(copied) == str(error)
    assert copied.args == error.args
    assert vars(copied) == vars(error)


@pytest.mark.parametrize("error", ERRORS, ids=[type(e).__name__ for e in ERRORS])
def test_an_error_pickles_and_copies_as_it_is(error: SpendgateError) -> None:
    _same(pickle.loads(pickle.dumps(error)), error)
    _same(copy.copy(error), error)


async def test_a_refusal_crosses_a_process_whole(make_budget: MakeBudget) -> None:
    budget = make_budget(daily_user_limit="1")
    with pytest.raises(BudgetExceededError) as refused:
        await budget.check_availability("ada", estimated_cost="2")
    copied = pickle.loads(pickle.dumps(refused.value))
    _same(copied, refused.value)
    assert (copied.scope, copied.scope_id, copied.window) == ("user", "ada", "daily")
    assert (copied.limit, copied.requested) == (Decimal(1), Decimal(2))
    assert str(copied).startswith("User daily limit exceeded for 'ada'")
