"""Features: ``check_feature`` (bursar's truthy rule, the calls left) and
``use_feature`` (one call counted atomically per calendar period).

On both backends, with the injected clock: 200 concurrent ``use_feature``
calls against ``max_calls=5`` with ``deny`` admit exactly 5 and refuse the
rest, counting nothing for them; with ``warn`` (and ``notify``) all 200 are
admitted and exactly one ``credits.cap_warning`` event is written, once per
period (a new month counts again and warns again); an idempotency key
counts once; a feature the plan does not have is refused and counts
nothing; a stale idea of the user's plan is corrected by the script.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from conftest import FakeClock, MakeBudget, stream_entries
from plan_helpers import snapshot
from spendgate import (
    BudgetManager,
    FeatureLimitExceededError,
    FeatureNotEntitledError,
    IdempotencyConflictError,
    InvalidIdError,
)


async def _on_plan(
    budget: BudgetManager, action: str = "deny", max_calls: int = 5
) -> None:
    await budget.set_plan(
        "pro",
        features={"image_gen": True, "seats": 0, "motto": "", "beta": False},
        feature_limits={
            "image_gen": {"max_calls": max_calls, "period": "monthly", "action": action}
        },
    )
    await budget.assign_plan("ada", "pro")


async def _events(budget: BudgetManager) -> list[dict[bytes, bytes]]:
    return [fields for _, fields in await stream_entries(budget, "events")]


async def test_check_feature_follows_bursars_truthy_rule(budget: BudgetManager) -> None:
    await budget.set_plan(
        "pro", features={"a": True, "zero": 0, "empty": "", "off": False, "none": None}
    )
    await budget.assign_plan("ada", "pro")
    seen = {
        f: (await budget.check_feature("ada", f))
        for f in ("a", "zero", "empty", "off", "none", "absent")
    }
    assert {f: c.has_feature for f, c in seen.items()} == {
        "a": True,
        "zero": True,
        "empty": True,
        "off": False,
        "none": False,
        "absent": False,
    }
    assert seen["zero"].value == 0 and seen["empty"].value == ""
    assert seen["a"].limit is None and seen["a"].remaining is None
    nobody = await budget.check_feature("bob", "a")
    assert nobody.plan_id is None and not nobody.has_feature


async def test_200_concurrent_uses_admit_exactly_max_calls(
    budget: BudgetManager, clock: FakeClock
) -> None:
    clock.set(datetime(2025, 1, 31, 23, tzinfo=UTC))
    await _on_plan(budget, "deny", 5)
    results = await asyncio.gather(
        *(budget.use_feature("ada", "image_gen") for _ in range(200)),
        return_exceptions=True,
    )
    admitted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, FeatureLimitExceededError)]
    assert len(admitted) == 5 and len(refused) == 195
    assert sorted(r.used for r in admitted) == [1, 2, 3, 4, 5]  # type: ignore[union-attr]
    assert refused[0].limit == 5 and refused[0].used == 5
    assert refused[0].resets_at == datetime(2025, 2, 1, tzinfo=UTC)
    check = await budget.check_feature("ada", "image_gen")
    assert (check.used, check.remaining, check.limit) == (5, 0, 5)
    assert check.action == "deny" and check.period == "monthly"
    assert await _events(budget) == []
    # the calendar month turns: counted again from zero
    clock.set(datetime(2025, 2, 1, tzinfo=UTC))
    again = await budget.use_feature("ada", "image_gen")
    assert again.used == 1 and again.remaining == 4


@pytest.mark.parametrize("action", ["warn", "notify"])
async def test_warn_admits_every_call_and_writes_one_event_per_period(
    budget: BudgetManager, clock: FakeClock, action: str
) -> None:
    clock.set(datetime(2025, 3, 5, tzinfo=UTC))
    await _on_plan(budget, action, 5)
    results = await asyncio.gather(
        *(budget.use_feature("ada", "image_gen") for _ in range(200))
    )
    assert sorted(r.used for r in results) == list(range(1, 201))
    assert sum(r.over_limit for r in results) == 195
    events = await _events(budget)
    assert len(events) == 1
    event = events[0]
    assert event[b"ty"] == b"credits.cap_warning"
    assert event[b"u"] == event[b"si"] == b"ada"
    assert event[b"sc"] == b"user" and event[b"w"] == b"monthly"
    assert json.loads(event[b"d"]) == {
        "feature": "image_gen",
        "max_calls": 5,
        "period_start": "2025-03-01T00:00:00+00:00",
        "used": 6,
    }
    # the next period warns once more
    clock.set(datetime(2025, 4, 2, tzinfo=UTC))
    for _ in range(7):
        await budget.use_feature("ada", "image_gen")
    assert len(await _events(budget)) == 2


async def test_a_key_counts_a_call_once(budget: BudgetManager) -> None:
    await _on_plan(budget, "deny", 5)
    first = await budget.use_feature("ada", "image_gen", idempotency_key="job-1")
    again = await budget.use_feature("ada", "image_gen", idempotency_key="job-1")
    assert first.used == again.used == 1
    assert not first.replayed and again.replayed
    assert (await budget.check_feature("ada", "image_gen")).used == 1
    with pytest.raises(IdempotencyConflictError):
        await budget.use_feature("ada", "seats", idempotency_key="job-1")
    # concurrent replays of one key count once too
    await asyncio.gather(
        *(
            budget.use_feature("ada", "image_gen", idempotency_key="j2")
            for _ in range(50)
        )
    )
    assert (await budget.check_feature("ada", "image_gen")).used == 2


async def test_a_key_replayed_in_the_next_period_answers_for_its_own_period(
    budget: BudgetManager, clock: FakeClock
) -> None:
    await _on_plan(budget, "deny", 1)
    clock.set(datetime(2026, 3, 31, 23, 59, tzinfo=UTC))
    first = await budget.use_feature("ada", "image_gen", idempotency_key="job-1")
    assert first.resets_at == datetime(2026, 4, 1, tzinfo=UTC)
    # A retry of the same call after the month turned: the call was counted in
    # March, so the answer is March's (not "April's one call is used").
    clock.set(datetime(2026, 4, 1, 0, 1, tzinfo=UTC))
    again = await budget.use_feature("ada", "image_gen", idempotency_key="job-1")
    assert again.replayed
    assert (again.used, again.remaining, again.resets_at) == (
        first.used,
        first.remaining,
        first.resets_at,
    )
    april = await budget.check_feature("ada", "image_gen")
    assert (april.used, april.remaining) == (0, 1)


async def test_a_refused_or_unentitled_use_changes_nothing(
    budget: BudgetManager,
) -> None:
    await _on_plan(budget, "deny", 1)
    await budget.use_feature("ada", "image_gen")
    before = await snapshot(budget)
    with pytest.raises(FeatureLimitExceededError):
        await budget.use_feature("ada", "image_gen", idempotency_key="k")
    with pytest.raises(FeatureNotEntitledError) as off:
        await budget.use_feature("ada", "beta")  # False in the plan
    assert off.value.plan_id == "pro"
    with pytest.raises(FeatureNotEntitledError) as planless:
        await budget.use_feature("bob", "image_gen")
    assert planless.value.plan_id is None
    with pytest.raises(InvalidIdError):
        await budget.use_feature("ada", "")
    assert await snapshot(budget) == before


async def test_a_feature_without_a_limit_is_used_and_counts_nothing(
    budget: BudgetManager,
) -> None:
    await _on_plan(budget)
    before = await snapshot(budget)
    used = await budget.use_feature("ada", "seats")  # 0: a value, so "yes"
    assert used.has_feature and used.value == 0
    assert used.limit is None and used.used is None
    assert await snapshot(budget) == before


async def test_a_stale_idea_of_the_users_plan_is_corrected(
    make_budget: MakeBudget,
) -> None:
    user_side, operator = make_budget(), make_budget()
    await operator.set_plan(
        "pro", feature_limits={"image_gen": {"max_calls": 2, "action": "deny"}}
    )
    with pytest.raises(FeatureNotEntitledError):
        await user_side.use_feature("ada", "image_gen")  # remembers: no plan
    await operator.assign_plan("ada", "pro")
    assert (await user_side.use_feature("ada", "image_gen")).used == 1
    assert (await user_side.check_feature("ada", "image_gen")).remaining == 1
    await operator.unassign_plan("ada")
    with pytest.raises(FeatureNotEntitledError):
        await user_side.use_feature("ada", "image_gen")
    check = await user_side.check_feature("ada", "image_gen")
    assert check.plan_id is None and check.limit is None
