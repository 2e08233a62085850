"""A replayed charge answers the warnings of the charge it replays.

How: a manager with ``cap_actions`` on, both backends. A charge that takes
a ``warn`` scope past thresholds is made, then made again with the same
idempotency key (``record_spend``, ``deduct``, ``settle``, and each on a
team's pool): the replay is marked ``replayed``, carries the very warnings
of the first call (scope, id, window, threshold, limit, spent), and writes
no event (the events stream is read back). A charge that reached nothing
stores its replay payload as it did before warnings were kept; limits in
the millions keep their exact digits through the payload.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from conftest import MakeBudget
from spendgate import BudgetManager


@pytest.fixture
def warned(make_budget: MakeBudget) -> BudgetManager:
    return make_budget(cap_actions=True)


async def _events(budget: BudgetManager) -> int:
    return int(await budget.redis.xlen(budget.keys.events))


async def _warn(budget: BudgetManager) -> None:
    await budget.set_limits("user", "ada", daily=4, action="warn")
    await budget.set_limits("project", "p1", monthly=8, action="warn")


async def test_a_replayed_record_spend_answers_its_warnings(
    warned: BudgetManager,
) -> None:
    await _warn(warned)
    first = await warned.record_spend("ada", 2, "p1", idempotency_key="k")
    assert [(w.scope, w.scope_id, w.window, w.threshold) for w in first.warnings] == [
        ("user", "ada", "daily", Decimal("0.5")),
    ]
    written = await _events(warned)
    again = await warned.record_spend("ada", 2, "p1", idempotency_key="k")
    assert again.replayed and again.entry_id == first.entry_id
    assert again.warnings == first.warnings
    assert await _events(warned) == written  # a replay writes nothing
    # one past several thresholds of two scopes: all of them, in order
    second = await warned.record_spend("ada", "2.5", "p1", idempotency_key="k2")
    assert len(second.warnings) == 4
    replay = await warned.record_spend("ada", "2.5", "p1", idempotency_key="k2")
    assert replay.warnings == second.warnings
    assert {w.scope for w in replay.warnings} == {"user", "project"}


async def test_a_replayed_deduct_answers_its_warnings(warned: BudgetManager) -> None:
    await _warn(warned)
    await warned.add_credits("ada", 100)
    first = await warned.deduct("ada", "3.2", "p1", idempotency_key="d")
    assert [w.threshold for w in first.warnings] == [Decimal("0.5"), Decimal("0.8")]
    written = await _events(warned)
    again = await warned.deduct("ada", "3.2", "p1", idempotency_key="d")
    assert again.replayed and again.entry_id == first.entry_id
    assert (again.warnings, again.balance_after) == (first.warnings, Decimal("96.8"))
    assert await _events(warned) == written


async def test_a_replayed_settle_answers_its_warnings(warned: BudgetManager) -> None:
    await _warn(warned)
    lease = await warned.reserve("ada", 1, "p1")
    first = await warned.settle(lease, 4)
    assert [w.threshold for w in first.warnings] == [
        Decimal("0.5"),
        Decimal("0.8"),
        Decimal("0.95"),
        Decimal(1),
        Decimal("0.5"),
    ]
    written = await _events(warned)
    for again in (await warned.settle(lease, 4), await warned.settle(lease.id, 4)):
        assert again.replayed and again.entry_id == first.entry_id
        assert again.warnings == first.warnings
    assert await _events(warned) == written


async def test_replayed_team_charges_answer_their_warnings(
    warned: BudgetManager,
) -> None:
    await warned.set_limits("user", "ada", daily=10, action="warn")
    await warned.create_team("eng", initial_balance=100)
    await warned.add_team_member("eng", "ada")
    record = await warned.record_spend("ada", 5, team_id="eng", idempotency_key="r")
    deducted = await warned.deduct("ada", 3, team_id="eng", idempotency_key="d")
    lease = await warned.reserve("ada", 1, team_id="eng")
    settled = await warned.settle(lease, 2)
    assert [len(r.warnings) for r in (record, deducted, settled)] == [1, 1, 2]
    written = await _events(warned)
    again = (
        await warned.record_spend("ada", 5, team_id="eng", idempotency_key="r"),
        await warned.deduct("ada", 3, team_id="eng", idempotency_key="d"),
        await warned.settle(lease.id, 2),
    )
    assert all(r.replayed for r in again)
    assert [r.warnings for r in again] == [
        record.warnings,
        deducted.warnings,
        settled.warnings,
    ]
    assert await _events(warned) == written
    assert (await warned.get_team("eng")).balance == 90


async def test_a_charge_that_reached_nothing_keeps_its_payload_as_before(
    warned: BudgetManager,
) -> None:
    await warned.set_limits("user", "ada", daily=100, action="warn")
    await warned.record_spend("ada", 1, idempotency_key="k")
    stored = await warned.redis.get(warned.keys.caller_idempotency("k"))
    assert stored is not None and b"|w" not in stored
    # "<fingerprint>|<entry>|<ms>|<amount>|<allowance>"
    assert stored.count(b"|") == 4 and stored.endswith(b"|1000000|")
    again = await warned.record_spend("ada", 1, idempotency_key="k")
    assert again.replayed and again.warnings == ()


async def test_large_limits_keep_their_digits_through_a_replay(
    warned: BudgetManager,
) -> None:
    await warned.set_limits("global", daily=900_000_000, action="warn")
    first = await warned.record_spend("ada", "450000000.000001", idempotency_key="k")
    [warning] = first.warnings
    assert (warning.limit, warning.spent) == (
        Decimal(900_000_000),
        Decimal("450000000.000001"),
    )
    again = await warned.record_spend("ada", "450000000.000001", idempotency_key="k")
    assert again.warnings == first.warnings
