"""Regressions the money-invariants state machine
(tests/test_money_invariants.py) found, each pinned on both backends by the
shortest sequence of calls that showed it.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from conftest import FakeClock, MakeBudget, deployment_state
from spendgate import IdempotencyConflictError, InvalidArgumentError


@pytest.mark.parametrize("team", [None, "eng"])
async def test_a_deduct_replayed_with_an_equal_amount_is_a_replay(
    make_budget: MakeBudget, team: str | None
) -> None:
    """The same amount in another form (``"0.5"``, ``Decimal("0.50")``, a
    float) is the same argument, as it is for record_spend: the retry
    replays the charge. It was an IdempotencyConflictError: the key's
    fingerprint held the amount's repr."""
    budget = make_budget()
    await budget.add_credits("ada", 10)
    if team is not None:
        await budget.create_team(team, initial_balance=10)
        await budget.add_team_member(team, "ada")
    first = await budget.deduct(
        "ada", Decimal("0.5"), team_id=team, idempotency_key="k"
    )
    state = await deployment_state(budget)
    for same in ("0.5", Decimal("0.50"), 0.5, "0.5000000"):
        again = await budget.deduct("ada", same, team_id=team, idempotency_key="k")
        assert again.replayed and again.entry_id == first.entry_id
        assert again.amount == Decimal("0.5")
    assert await deployment_state(budget) == state


async def test_a_credit_replayed_after_its_expiry_is_a_replay(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    """A grant's retry with its key, made once its ``expires_at`` passed,
    answers the grant made (it was refused as an expiry in the past, as if
    no grant had been made); with other arguments it is a conflict, and
    without a grant to replay the past expiry is refused; none changes a
    key."""
    budget = make_budget()
    at = clock() + timedelta(seconds=60)
    first = await budget.add_credits("ada", 5, "k", expires_at=at)
    clock.advance(120)
    state = await deployment_state(budget)
    again = await budget.add_credits("ada", 5, "k", expires_at=at)
    assert again.replayed and again.entry_id == first.entry_id
    assert again.balance == Decimal(5)
    with pytest.raises(IdempotencyConflictError):
        await budget.add_credits("ada", 6, "k", expires_at=at)
    for key in ("other", None):
        with pytest.raises(InvalidArgumentError, match="has passed"):
            await budget.add_credits("ada", 5, key, expires_at=at)
    assert await deployment_state(budget) == state
