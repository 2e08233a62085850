"""Plans and users' plans: ``set_plan``, the price book's ``plans``,
``assign_plan``, ``get_user_plan``, ``unassign_plan``.

On both backends, with the injected clock: a plan set or loaded reads back
with its values; bursar's README book loads unchanged and its plans are in
force; ``set_plan`` wins over the book for the same id; assigning anchors
the cycle at the clock's now and ``resets_at`` follows the cycle (a Jan 31
assignment renews on Feb 29 of a leap year, exactly at the boundary); the
allowance counter of each period is its own key (a renewal or a
re-assignment starts at zero); bad input raises a typed error and leaves
every key as it was.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from conftest import FakeClock, MakeBudget
from plan_helpers import BURSAR_BOOK_WITH_PLANS, snapshot
from spendgate import (
    BudgetManager,
    InvalidArgumentError,
    InvalidIdError,
    InvalidIdTypeError,
    PricingConfigError,
)
from spendgate.core.windows import to_ms
from spendgate.plans.models import FeatureLimit


async def test_a_plan_set_reads_back_with_its_values(budget: BudgetManager) -> None:
    plan = await budget.set_plan(
        "pro",
        name="Pro",
        free_allowance="500.25",
        period="monthly",
        rate_overrides={"_default": "input_tokens * 0.001"},
        features={"max_concurrency": 4, "beta": False},
        feature_limits={"image_gen": {"max_calls": 5, "action": "warn"}},
    )
    got = await budget.get_plan("pro")
    assert got == plan
    assert got is not None
    assert got.name == "Pro" and got.source == "set_plan"
    assert got.free_allowance == Decimal("500.25")
    assert got.period == "monthly"
    assert got.features == {"max_concurrency": 4, "beta": False}
    assert got.feature_limits == {"image_gen": FeatureLimit(5, "monthly", "warn")}
    assert got.rate_overrides == {"_default": "input_tokens * 0.001"}
    # bursar's format, as written, with spendgate's monthly cycle spelled as
    # bursar spells it
    assert got.config["allowance_period"] == "anniversary"
    assert [p.plan_id for p in await budget.list_plans()] == ["pro"]
    assert await budget.get_plan("nope") is None


async def test_bursar_readme_plans_load_unchanged_from_a_price_book(
    budget: BudgetManager,
) -> None:
    version = await budget.publish_pricing(BURSAR_BOOK_WITH_PLANS)
    stored = await budget.get_pricing(version)
    assert stored is not None
    assert stored.config["plans"] == BURSAR_BOOK_WITH_PLANS["plans"]
    plans = {p.plan_id: p for p in await budget.list_plans()}
    assert set(plans) == {"free", "pro"}
    free = plans["free"]
    assert free.source == "price_book" and free.name == "Free Tier"
    assert free.free_allowance == Decimal(50000)
    assert free.period == "monthly"  # no allowance_period: the user's cycle
    assert free.features == {"max_concurrency": 1, "background_removal": True}
    assert free.feature_limits == {
        "background_removal": FeatureLimit(5, "monthly", "deny")
    }
    assert dict(free.config) == BURSAR_BOOK_WITH_PLANS["plans"]["free"]
    assert plans["pro"].free_allowance == Decimal(500000)
    # a book's bursar-only cycles are kept
    await budget.publish_pricing(
        {
            "models": {"_default": "input_tokens * 1"},
            "plans": {
                "cal": {"id": "c", "name": "C", "allowance_period": "calendar_month"},
                "roll": {"id": "r", "name": "R", "allowance_period": "rolling_30d"},
            },
        }
    )
    periods = {p.plan_id: p.period for p in await budget.list_plans()}
    assert periods == {"cal": "calendar_month", "roll": "rolling_30d"}


async def test_set_plan_wins_over_the_books_plan_and_stays_across_books(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget()
    await budget.publish_pricing(BURSAR_BOOK_WITH_PLANS)
    await budget.set_plan("pro", name="Pro (custom)", free_allowance=7)
    plans = {p.plan_id: p for p in await budget.list_plans()}
    assert plans["pro"].source == "set_plan"
    assert plans["pro"].free_allowance == Decimal(7)
    assert plans["free"].source == "price_book"
    await budget.publish_pricing({"models": {"_default": "input_tokens * 1"}})
    # another book, without plans: set_plan's plan is still in force, on
    # another instance too
    other = make_budget()
    assert [(p.plan_id, p.source) for p in await other.list_plans()] == [
        ("pro", "set_plan")
    ]


async def test_assigning_anchors_the_cycle_at_now(
    budget: BudgetManager, clock: FakeClock
) -> None:
    await budget.set_plan("pro", free_allowance=100)
    clock.set(datetime(2024, 1, 31, 10, 0, tzinfo=UTC))
    assigned = await budget.assign_plan("ada", "pro")
    assert assigned.assigned_at == assigned.period_start == clock.now
    assert assigned.resets_at == datetime(2024, 2, 29, 10, tzinfo=UTC)
    assert assigned.allowance_remaining == Decimal(100)
    clock.set(datetime(2024, 2, 29, 9, 59, 59, 999000, tzinfo=UTC))
    up = await budget.get_user_plan("ada")
    assert up is not None
    assert up.plan_id == "pro" and up.name == "pro"
    assert up.period_start == datetime(2024, 1, 31, 10, tzinfo=UTC)
    assert up.resets_at == datetime(2024, 2, 29, 10, tzinfo=UTC)
    # exactly at the boundary: the next period, which renews on Mar 31
    clock.set(datetime(2024, 2, 29, 10, tzinfo=UTC))
    up = await budget.get_user_plan("ada")
    assert up is not None
    assert up.period_start == datetime(2024, 2, 29, 10, tzinfo=UTC)
    assert up.resets_at == datetime(2024, 3, 31, 10, tzinfo=UTC)
    assert up.assigned_at == datetime(2024, 1, 31, 10, tzinfo=UTC)
    assert await budget.get_user_plan("bob") is None


async def test_each_period_has_its_own_allowance_counter(
    budget: BudgetManager, clock: FakeClock
) -> None:
    """What the charge path will consume: al:<period start>:<user>, in
    micro-units; get_user_plan subtracts the current period's."""
    await budget.set_plan("pro", free_allowance=100)
    clock.set(datetime(2025, 1, 31, 8, tzinfo=UTC))
    await budget.assign_plan("ada", "pro")
    start = to_ms(clock.now)
    await budget.redis.set(budget.keys.of("ada").allowance("ada", start), 60_500_000)
    up = await budget.get_user_plan("ada")
    assert up is not None
    assert up.allowance_used == Decimal("60.5")
    assert up.allowance_remaining == Decimal("39.5")
    await budget.redis.set(budget.keys.of("ada").allowance("ada", start), 250_000_000)
    up = await budget.get_user_plan("ada")
    assert up is not None and up.allowance_remaining == 0  # never below zero
    # the allowance renews exactly at the boundary (Feb 28 in 2025)
    clock.set(datetime(2025, 2, 28, 8, tzinfo=UTC))
    up = await budget.get_user_plan("ada")
    assert up is not None
    assert up.allowance_used == 0 and up.allowance_remaining == Decimal(100)
    assert up.resets_at == datetime(2025, 3, 31, 8, tzinfo=UTC)


async def test_reassigning_starts_a_new_cycle_without_pro_rata(
    budget: BudgetManager, clock: FakeClock
) -> None:
    await budget.set_plan("pro", free_allowance=100)
    await budget.set_plan("team", free_allowance=1000, period="weekly")
    clock.set(datetime(2025, 3, 10, tzinfo=UTC))
    await budget.assign_plan("ada", "pro")
    await budget.redis.set(
        budget.keys.of("ada").allowance("ada", to_ms(clock.now)), 90_000_000
    )
    clock.advance(days=12)
    changed = await budget.assign_plan("ada", "team")
    assert changed.assigned_at == changed.period_start == clock.now
    assert changed.resets_at == datetime(2025, 3, 29, tzinfo=UTC)
    up = await budget.get_user_plan("ada")
    assert up is not None
    assert up.plan_id == "team"
    assert up.allowance_used == 0 and up.allowance_remaining == Decimal(1000)
    # the same plan again re-anchors too
    clock.advance(days=1)
    again = await budget.assign_plan("ada", "team")
    assert again.period_start == clock.now


async def test_another_instance_reads_the_assignment(make_budget: MakeBudget) -> None:
    one, two = make_budget(), make_budget()
    await one.set_plan("pro", free_allowance=5)
    assert await two.get_user_plan("ada") is None  # two remembers "no plan"
    await one.assign_plan("ada", "pro")
    up = await two.get_user_plan("ada")
    assert up is not None and up.plan_id == "pro"
    assert await one.unassign_plan("ada") is True
    assert await two.get_user_plan("ada") is None
    assert await one.unassign_plan("ada") is False


async def test_an_allowance_finer_than_a_micro_unit_is_what_can_be_drawn(
    budget: BudgetManager,
) -> None:
    # The allowance is drawn in micro-units, rounded down as credits are: a
    # plan reports the allowance its users can draw, and a period drawn in
    # full has nothing left, not a sub-micro-unit remainder no charge takes.
    plan = await budget.set_plan("tiny", free_allowance="2.0000019")
    assert plan.free_allowance == Decimal("2.000001")
    await budget.assign_plan("ada", "tiny")
    spent = await budget.record_spend("ada", "2.000002")
    assert spent.allowance_used_micros == 2_000_001
    up = await budget.get_user_plan("ada")
    assert up is not None
    assert (up.allowance, up.allowance_used, up.allowance_remaining) == (
        Decimal("2.000001"),
        Decimal("2.000001"),
        0,
    )


async def test_a_plan_no_longer_in_force_gives_nothing(budget: BudgetManager) -> None:
    await budget.publish_pricing(BURSAR_BOOK_WITH_PLANS)
    await budget.assign_plan("ada", "free")
    await budget.publish_pricing({"models": {"_default": "input_tokens * 1"}})
    up = await budget.get_user_plan("ada")
    assert up is not None
    assert up.plan_id == "free" and up.name is None
    assert up.allowance == 0 and up.features == {}


_BAD = PricingConfigError


def _limit(**fields: object) -> dict[str, object]:
    return {"feature_limits": {"f": {"max_calls": 1, **fields}}}


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"free_allowance": -1}, _BAD),
        ({"free_allowance": "lots"}, _BAD),
        ({"free_allowance": float("nan")}, _BAD),
        ({"period": "fortnightly"}, _BAD),
        ({"rate_overrides": {"_default": "__import__('os')"}}, _BAD),
        ({"rate_overrides": {"gpt": "input_tokens ** 2"}}, _BAD),
        ({"features": ["a"]}, _BAD),
        # names use_feature can never be called with
        ({"features": {"": True}}, _BAD),
        ({"features": {" \t": True}}, _BAD),
        ({"features": {"f" * 257: True}}, _BAD),
        ({"features": {7: True}}, _BAD),
        ({"feature_limits": {"": {"max_calls": 1}}}, _BAD),
        ({"feature_limits": {"  ": {"max_calls": 1}}}, _BAD),
        (_limit(max_calls=-1), _BAD),
        (_limit(action="explode"), _BAD),
        (_limit(period="hourly"), _BAD),
        (_limit(extra=1), _BAD),
        ({"name": ""}, InvalidIdError),
        ({"name": 5}, InvalidIdTypeError),
    ],
)
async def test_a_bad_plan_is_refused_and_nothing_changes(
    budget: BudgetManager, kwargs: dict[str, object], error: type[Exception]
) -> None:
    await budget.set_plan("base", free_allowance=1)
    before = await snapshot(budget)
    with pytest.raises(error):
        await budget.set_plan("pro", **kwargs)  # type: ignore[arg-type]
    assert await snapshot(budget) == before


async def test_bad_ids_and_unknown_plans_are_refused_and_nothing_changes(
    budget: BudgetManager,
) -> None:
    await budget.set_plan("pro")
    before = await snapshot(budget)
    with pytest.raises(InvalidIdError):
        await budget.set_plan("")
    with pytest.raises(InvalidIdError):
        await budget.set_plan("x" * 257)
    with pytest.raises(InvalidIdTypeError):
        await budget.set_plan(3)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="no plan 'gold'"):
        await budget.assign_plan("ada", "gold")
    with pytest.raises(InvalidIdError):
        await budget.assign_plan("", "pro")
    with pytest.raises(InvalidIdTypeError):
        await budget.get_user_plan(None)
    assert await snapshot(budget) == before


async def test_a_plan_read_is_the_callers_to_change(budget: BudgetManager) -> None:
    await budget.set_plan("pro", features={"limits": {"seats": 3}})
    await budget.assign_plan("ada", "pro")
    plan = await budget.get_plan("pro")
    assert plan is not None
    plan.features["limits"]["seats"] = 99  # type: ignore[index]
    up = await budget.get_user_plan("ada")
    assert up is not None
    up.features["limits"]["seats"] = 98  # type: ignore[index]
    assert (await budget.check_feature("ada", "limits")).value == {"seats": 3}
