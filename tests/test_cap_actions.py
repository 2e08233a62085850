"""Cap actions (deny / warn / notify) and the threshold events a charge writes.

How: a manager with ``cap_actions`` on, on both backends, with a scope's
action set by ``set_limits``; the events stream is read back directly
(``from_events_entry``, as the dispatcher reads it) and, once, through a
``budget.events.on`` handler. Checked: what ``set_limits`` accepts and
refuses (typed errors, nothing changed), that warn and notify admit past the
cap and deny refuses at it, that each threshold of a window is one event
however many concurrent charges cross it (500 of them), that an idempotent
replay, a refund followed by a new crossing and a settle write nothing twice,
the ``warnings`` a warn charge's result carries, and the low balance event.
Spool replays are ``tests/test_cap_actions_spool.py``'s.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest

from conftest import FakeClock, MakeBudget, stream_entries
from spendgate import BudgetExceededError, BudgetManager, InvalidArgumentError
from spendgate.events import Event
from spendgate.events.model import from_events_entry
from spendgate.models import CapWarning
from spendgate.ops.cap_actions import MAX_THRESHOLDS


def actions(make_budget: MakeBudget, **settings: Any) -> BudgetManager:
    return make_budget(cap_actions=True, **settings)


async def events_of(budget: BudgetManager) -> list[Event]:
    """Every event the scripts wrote, in order."""
    raw = await stream_entries(budget, "events")
    return [from_events_entry(sid.decode(), fields) for sid, fields in raw]


def crossings(events: list[Event]) -> list[tuple[str, str | None, str | None, str]]:
    """(type, scope, window, threshold) of each event."""
    return [(e.type, e.scope, e.window, str(e.data["threshold"])) for e in events]


WARNINGS = [
    ("credits.cap_warning", "user", "daily", "0.5"),
    ("credits.cap_warning", "user", "daily", "0.8"),
    ("credits.cap_warning", "user", "daily", "0.95"),
    ("credits.cap_reached", "user", "daily", "1"),
]


# -- set_limits ------------------------------------------------------------------


async def test_an_action_is_stored_with_the_limits_and_shown(
    make_budget: MakeBudget,
) -> None:
    budget = actions(make_budget)
    limits = await budget.set_limits("user", "ada", daily=10, action="warn")
    assert (limits.daily, limits.action) == (Decimal(10), "warn")
    assert limits.thresholds == tuple(Decimal(t) for t in ("0.5", "0.8", "0.95", "1"))
    shown = await budget.set_limits("user", "ada")  # a read
    assert (shown.action, shown.thresholds) == (limits.action, limits.thresholds)
    # unsorted, repeated, without 1: sorted, once, and the cap itself added
    limits = await budget.set_limits(
        "project", "p1", action="notify", thresholds=("0.9", 0.25, Decimal("0.9"))
    )
    assert limits.thresholds == (Decimal("0.25"), Decimal("0.9"), Decimal(1))
    assert (await budget.set_limits("global", action="deny")).thresholds == (
        Decimal(1),
    )
    # a cap changed later keeps the action; None drops it; clear drops all
    limits = await budget.set_limits("user", "ada", daily=20)
    assert (limits.daily, limits.action) == (Decimal(20), "warn")
    limits = await budget.set_limits("user", "ada", action=None)
    assert (limits.daily, limits.action, limits.thresholds) == (Decimal(20), None, ())
    await budget.set_limits("user", "ada", action="warn")
    limits = await budget.clear_limits("user", "ada")
    assert (limits.action, limits.overridden) == (None, frozenset())
    assert await budget.redis.get(budget.keys.of("ada").limits("user", "ada")) is None


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"action": "block"}, "action must be"),
        ({"action": 1}, "action must be"),
        ({"action": "warn", "thresholds": (0,)}, r"in \(0, 1\]"),
        ({"action": "warn", "thresholds": ("1.5",)}, r"in \(0, 1\]"),
        ({"action": "warn", "thresholds": ("-0.5",)}, r"in \(0, 1\]"),
        ({"action": "warn", "thresholds": ("NaN",)}, r"in \(0, 1\]"),
        ({"action": "warn", "thresholds": ("x",)}, "must be a number"),
        ({"action": "warn", "thresholds": (True,)}, "must be a number"),
        ({"action": "warn", "thresholds": "0.5"}, "sequence"),
        ({"action": "warn", "thresholds": ("0.0000001",)}, "millionth"),
        (
            {
                "action": "warn",
                "thresholds": [f"0.{i}" for i in range(1, 10)] + ["0.05"],
            },
            f"at most {MAX_THRESHOLDS}",
        ),
        ({"thresholds": (0.5,)}, "with an action"),
        ({"action": None, "thresholds": (0.5,)}, "with an action"),
    ],
)
async def test_bad_actions_and_thresholds_are_refused_and_change_nothing(
    make_budget: MakeBudget, arguments: dict[str, Any], message: str
) -> None:
    budget = actions(make_budget)
    await budget.set_limits("user", "ada", daily=5, action="notify")
    with pytest.raises(InvalidArgumentError, match=message):
        await budget.set_limits("user", "ada", daily=7, **arguments)
    limits = await budget.set_limits("user", "ada")
    assert (limits.daily, limits.action) == (Decimal(5), "notify")


async def test_an_action_needs_cap_actions_on(make_budget: MakeBudget) -> None:
    budget = make_budget()
    with pytest.raises(InvalidArgumentError, match="cap_actions"):
        await budget.set_limits("user", "ada", daily=5, action="warn")
    assert (await budget.set_limits("user", "ada")).daily is None  # unchanged


# -- admission -------------------------------------------------------------------


async def test_warn_and_notify_admit_past_the_cap_deny_refuses(
    make_budget: MakeBudget,
) -> None:
    budget = actions(make_budget, enforce_balance=False)
    await budget.set_limits("user", "w", daily=1, action="warn")
    await budget.set_limits("user", "n", daily=1, action="notify")
    await budget.set_limits("user", "d", daily=1, action="deny")
    for user in ("w", "n"):
        await budget.record_spend(user, "1.5")
        assert await budget.check_availability(user, estimated_cost="1")
        lease = await budget.reserve(user, "2")
        await budget.release(lease)
        # a warn or notify cap limits nothing: nothing else is capped
        assert await budget.remaining(user) is None
    with pytest.raises(BudgetExceededError) as refused:
        await budget.check_availability("d", estimated_cost="1.01")
    assert refused.value.window == "daily"
    # the other caps still hold: the balance of a deduct
    await budget.add_credits("w", "0.5")
    with pytest.raises(BudgetExceededError) as refused:
        await budget.deduct("w", "1")
    assert refused.value.window == "balance"


async def test_a_warn_scope_with_weekly_and_per_minute_caps_parses_them_all(
    make_budget: MakeBudget,
) -> None:
    budget = actions(make_budget, weekly_caps=True, per_minute_caps=True)
    limits = await budget.set_limits(
        "user", "ada", daily=1, weekly=3, per_minute=2, action="warn"
    )
    assert (limits.weekly, limits.per_minute, limits.action) == (
        Decimal(3),
        Decimal(2),
        "warn",
    )
    await budget.record_spend("ada", "1.5")  # past the daily: warned
    assert await budget.check_availability("ada", estimated_cost="0.5")
    with pytest.raises(BudgetExceededError) as refused:  # the per-minute cap
        await budget.check_availability("ada", estimated_cost="0.6")
    assert refused.value.window == "minute"


# -- events ----------------------------------------------------------------------


async def test_500_concurrent_charges_write_each_threshold_once(
    make_budget: MakeBudget,
) -> None:
    budget = actions(make_budget)
    await budget.set_limits("user", "ada", daily=5, action="warn")
    records = await asyncio.gather(
        *(budget.record_spend("ada", "0.01") for _ in range(500))
    )
    events = await events_of(budget)
    assert crossings(events) == WARNINGS
    assert len({e.id for e in events}) == 4  # distinct ids
    reached = events[-1]
    assert (reached.user_id, reached.scope_id) == ("ada", "ada")
    assert reached.data == {
        "threshold": "1",
        "limit": "5",
        "spent": "5",
        "action": "warn",
    }
    # the charges that crossed carry what they crossed: four in all
    warned = [w for r in records for w in r.warnings]
    assert sorted(w.threshold for w in warned) == [
        Decimal("0.5"),
        Decimal("0.8"),
        Decimal("0.95"),
        Decimal(1),
    ]
    assert all(
        w.scope == "user" and w.window == "daily" and w.limit == 5 for w in warned
    )
    # past the cap nothing more is written in this window
    await budget.record_spend("ada", "3")
    assert len(await events_of(budget)) == 4


async def test_one_charge_past_several_thresholds_writes_each(
    make_budget: MakeBudget,
) -> None:
    budget = actions(make_budget)
    await budget.set_limits(
        "project", "p1", daily=10, monthly=100, action="warn", thresholds=(0.1, 0.5)
    )
    record = await budget.record_spend("ada", "10", project_id="p1")
    assert [(w.scope, w.scope_id, w.window, w.threshold) for w in record.warnings] == [
        ("project", "p1", "daily", Decimal("0.1")),
        ("project", "p1", "daily", Decimal("0.5")),
        ("project", "p1", "daily", Decimal(1)),
        ("project", "p1", "monthly", Decimal("0.1")),
    ]
    assert record.warnings[2] == CapWarning(
        "project", "p1", "daily", Decimal(1), Decimal(10), Decimal(10)
    )
    assert record.warnings[2].reached_cap
    events = await events_of(budget)
    assert [(e.type, e.scope, e.scope_id, e.window) for e in events] == [
        ("credits.cap_warning", "project", "p1", "daily"),
        ("credits.cap_warning", "project", "p1", "daily"),
        ("credits.cap_reached", "project", "p1", "daily"),
        ("credits.cap_warning", "project", "p1", "monthly"),
    ]


async def test_a_replayed_charge_writes_nothing(make_budget: MakeBudget) -> None:
    budget = actions(make_budget)
    await budget.set_limits("user", "ada", daily=2, action="warn")
    await budget.add_credits("ada", "100")
    first = await budget.record_spend("ada", "1", idempotency_key="k1")
    again = await budget.record_spend("ada", "1", idempotency_key="k1")
    assert again.replayed and again.warnings == first.warnings
    assert [w.threshold for w in first.warnings] == [Decimal("0.5")]
    deducted = await budget.deduct("ada", "1", idempotency_key="k2")
    replay = await budget.deduct("ada", "1", idempotency_key="k2")
    assert [w.threshold for w in deducted.warnings] == [
        Decimal("0.8"),
        Decimal("0.95"),
        Decimal(1),
    ]
    assert replay.replayed and replay.warnings == deducted.warnings
    assert len(await events_of(budget)) == 4


async def test_a_refund_then_a_new_crossing_writes_nothing_twice(
    make_budget: MakeBudget,
) -> None:
    budget = actions(make_budget)
    await budget.set_limits("user", "ada", daily=10, action="deny", thresholds=(0.5,))
    await budget.add_credits("ada", "100")
    charge = await budget.record_spend("ada", "10")
    assert charge.warnings == ()  # deny: events only
    assert crossings(await events_of(budget)) == [
        ("credits.cap_warning", "user", "daily", "0.5"),
        ("credits.cap_reached", "user", "daily", "1"),
    ]
    await budget.refund(charge.entry_id, "6")
    again = await budget.deduct("ada", "6")  # to the cap again, exactly
    assert again.amount == 6
    with pytest.raises(BudgetExceededError):
        await budget.deduct("ada", "0.01")
    assert len(await events_of(budget)) == 2


async def test_deny_writes_cap_reached_once_when_a_charge_reaches_the_cap(
    make_budget: MakeBudget,
) -> None:
    budget = actions(make_budget)
    await budget.set_limits("user", "ada", daily=3, action="deny")
    await budget.add_credits("ada", "100")
    results = await asyncio.gather(
        *(budget.deduct("ada", "0.5") for _ in range(10)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 6
    assert crossings(await events_of(budget)) == [
        ("credits.cap_reached", "user", "daily", "1")
    ]


async def test_notify_admits_and_writes_events_its_results_say_nothing(
    make_budget: MakeBudget,
) -> None:
    budget = actions(make_budget)
    await budget.set_limits("global", daily=2, monthly=4, action="notify")
    await budget.add_credits("ada", "100")
    first = await budget.deduct("ada", "1.9")
    lease = await budget.reserve("ada", "1")
    settled = await budget.settle(lease, "1")
    assert first.warnings == () and settled.warnings == ()
    events = await events_of(budget)
    assert [(e.type, e.scope, e.scope_id, e.window) for e in events] == [
        ("credits.cap_warning", "global", None, "daily"),
        ("credits.cap_warning", "global", None, "daily"),
        ("credits.cap_warning", "global", None, "daily"),
        ("credits.cap_reached", "global", None, "daily"),
        ("credits.cap_warning", "global", None, "monthly"),
    ]
    assert events[0].data["action"] == "notify" and events[0].user_id == "ada"


async def test_a_settle_crosses_at_its_cost_and_names_the_window_of_the_charge(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    budget = actions(make_budget)
    await budget.set_limits("user", "ada", monthly=4, action="warn", thresholds=[0.5])
    lease = await budget.reserve("ada", "1")
    assert await events_of(budget) == []  # a hold is no spend
    record = await budget.settle(lease, "3")
    assert [(w.window, w.threshold) for w in record.warnings] == [
        ("monthly", Decimal("0.5"))
    ]
    [event] = await events_of(budget)
    assert event.occurred_at == record.occurred_at
    assert event.data["spent"] == "3"


async def test_a_new_window_writes_its_thresholds_again(
    make_budget: MakeBudget, clock: FakeClock
) -> None:
    budget = actions(make_budget)
    await budget.set_limits("user", "ada", daily=1, action="warn", thresholds=[0.5])
    await budget.record_spend("ada", "1")
    clock.advance(days=1)
    await budget.record_spend("ada", "1")
    assert Counter(e.type for e in await events_of(budget)) == {
        "credits.cap_warning": 2,
        "credits.cap_reached": 2,
    }


# -- low balance -----------------------------------------------------------------


async def test_low_balance_is_written_once_until_a_credit_rearms_it(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(low_balance_threshold="5", enforce_balance=True)
    await budget.add_credits("ada", "10")
    await budget.deduct("ada", "4")  # 6 left: above
    await asyncio.gather(*(budget.deduct("ada", "0.5") for _ in range(12)))
    [event] = await events_of(budget)
    assert (event.type, event.user_id, event.scope, event.window) == (
        "credits.low_balance",
        "ada",
        "user",
        "balance",
    )
    assert event.data == {"threshold": "5", "balance": "4.5"}
    await budget.add_credits("ada", "10")  # 10: re-armed
    await budget.record_spend("ada", "6")
    events = await events_of(budget)
    assert [e.data["balance"] for e in events] == ["4.5", "4"]
    # a user without a balance kept writes none
    await budget.record_spend("bob", "100")
    assert len(await events_of(budget)) == 2


# -- delivery --------------------------------------------------------------------


async def test_threshold_events_reach_an_events_on_handler(
    make_budget: MakeBudget,
) -> None:
    budget = actions(make_budget, events_backoff_seconds=0.001)
    got: list[Event] = []
    budget.events.on("credits.cap_warning", got.append)
    budget.events.on("credits.cap_reached", got.append)
    await budget.set_limits("user", "ada", daily=2, action="warn")
    await budget.record_spend("ada", "2")
    for _ in range(2000):
        if len(got) == 4:
            break
        await asyncio.sleep(0.005)
    assert sorted(str(e.data["threshold"]) for e in got) == ["0.5", "0.8", "0.95", "1"]
    assert len({e.id for e in got}) == 4
    assert {e.type for e in got} == {"credits.cap_warning", "credits.cap_reached"}


async def test_a_cap_lowered_mid_window_is_written_by_the_next_charge(
    make_budget: MakeBudget,
) -> None:
    budget = actions(make_budget)
    await budget.set_limits("user", "ada", daily=10, action="notify", thresholds=[0.5])
    await budget.record_spend("ada", "6")  # 0.5 of 10
    await budget.set_limits("user", "ada", daily=4)  # now past the cap
    await budget.record_spend("ada", "0.01")
    await budget.record_spend("ada", "0.01")
    assert crossings(await events_of(budget)) == [
        ("credits.cap_warning", "user", "daily", "0.5"),
        ("credits.cap_reached", "user", "daily", "1"),
    ]


async def test_usage_shows_each_scopes_action(make_budget: MakeBudget) -> None:
    budget = actions(make_budget)
    await budget.set_limits("project", "p1", action="notify", thresholds=[0.9])
    usage = await budget.get_usage("ada", "p1")
    assert (usage["user"].action, usage["user"].thresholds) == (None, ())
    assert (usage["project"].action, usage["project"].thresholds) == (
        "notify",
        (Decimal("0.9"), Decimal(1)),
    )
    assert usage["global"].action is None
