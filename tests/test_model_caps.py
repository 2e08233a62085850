"""Per-model caps: ``set_limits(scope, id, model=..., daily=..., monthly=...)``.

How: a deployment with ``model_caps`` on, the injected clock driving the
day and month. A model's cap refuses that model alone (other models, and
calls without a model, pass), for every scope and window, through every
admitting call (``check_availability``, ``reserve``, ``reserve_up_to``,
``extend``, ``deduct``); every fact with a model counts against it
(``record_spend``, ``settle`` at the model its lease was reserved for,
``deduct``), once however often it is replayed; a refund gives it back;
200 concurrent reserves of one model admit exactly up to its cap. Model
ids are length-prefixed in the keys ("a:b" never meets "a"). With the
setting off the scripts are exactly those without the hooks, and a model
cap is refused. Both backends.
"""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from decimal import Decimal

import pytest
import redis.asyncio as aioredis

from conftest import FakeClock, MakeBudget
from spendgate import (
    BudgetExceededError,
    BudgetManager,
    InvalidArgumentError,
    InvalidIdError,
)
from spendgate.core.scripts import (
    LIBRARIES,
    SCRIPT_CONSTANTS,
    SCRIPT_NAMES,
    configured_source,
    lua_dir,
)

GPT = "gpt-4o"
MINI = "gpt-4o-mini"


@pytest.fixture
def capped(make_budget: MakeBudget) -> BudgetManager:
    return make_budget(model_caps=True)


async def test_a_model_cap_refuses_only_that_model(capped: BudgetManager) -> None:
    limits = await capped.set_limits("user", "ada", model=GPT, daily=1)
    assert (limits.model, limits.daily, limits.monthly) == (GPT, Decimal(1), None)
    await capped.record_spend("ada", "0.8", model=GPT)
    with pytest.raises(BudgetExceededError) as refused:
        await capped.check_availability("ada", None, "0.5", model=GPT)
    error = refused.value
    assert (error.scope, error.scope_id, error.window, error.model) == (
        "user",
        "ada",
        "daily",
        GPT,
    )
    assert (error.limit, error.spent, error.held) == (
        Decimal(1),
        Decimal("0.8"),
        Decimal(0),
    )
    assert "on model 'gpt-4o'" in str(error)
    assert error.to_json(error.resets_at or error.resets_at)["model"] == GPT
    # other models, no model, another user: the scope's own caps alone
    assert await capped.check_availability("ada", None, "5", model=MINI)
    assert await capped.check_availability("ada", None, "5")
    assert await capped.check_availability("bob", None, "5", model=GPT)
    # what is left of the model, as remaining says
    assert await capped.remaining("ada", None, 0, model=GPT) == Decimal("0.2")
    assert await capped.remaining("ada", None, 0) is None


@pytest.mark.parametrize("scope", ["user", "project", "global"])
async def test_each_scope_caps_the_model(capped: BudgetManager, scope: str) -> None:
    scope_id = {"user": "ada", "project": "p1", "global": None}[scope]
    await capped.set_limits(scope, scope_id, model=GPT, daily=2)  # type: ignore[arg-type]
    await capped.record_spend("ada", "1.5", project_id="p1", model=GPT)
    with pytest.raises(BudgetExceededError) as refused:
        await capped.reserve("bea" if scope != "user" else "ada", 1, "p1", model=GPT)
    assert (refused.value.scope, refused.value.model) == (scope, GPT)
    assert refused.value.scope_id == scope_id
    # the same call for another model, and outside the capped scope, pass
    await capped.reserve("ada", 1, "p1", model=MINI)
    if scope == "project":
        await capped.reserve("ada", 1, "p2", model=GPT)


async def test_daily_and_monthly_windows(
    capped: BudgetManager, clock: FakeClock
) -> None:
    await capped.set_limits("user", "ada", model=GPT, daily=3, monthly=5)
    await capped.record_spend("ada", 3, model=GPT)
    with pytest.raises(BudgetExceededError) as refused:
        await capped.check_availability("ada", None, "0.5", model=GPT)
    assert refused.value.window == "daily"
    clock.advance(timedelta(days=1).total_seconds())
    await capped.check_availability("ada", None, 2, model=GPT)  # a new day
    await capped.record_spend("ada", 2, model=GPT)
    with pytest.raises(BudgetExceededError) as refused:
        await capped.check_availability("ada", None, "0.5", model=GPT)
    assert (refused.value.window, refused.value.limit) == ("monthly", Decimal(5))
    usage = await capped.get_usage("ada", model=GPT)
    model = usage["user"].model
    assert model is not None and model.model == GPT
    assert (model.daily.spent, model.daily.limit) == (Decimal(2), Decimal(3))
    assert (model.monthly.spent, model.monthly.remaining) == (Decimal(5), Decimal(0))
    assert usage["global"].model is not None
    assert usage["global"].model.monthly.limit is None  # no global cap
    assert usage["global"].model.monthly.spent == Decimal(5)
    # cleared: the model has no cap at all
    cleared = await capped.clear_limits("user", "ada", model=GPT)
    assert (cleared.daily, cleared.monthly, cleared.overridden) == (
        None,
        None,
        frozenset(),
    )
    await capped.check_availability("ada", None, 100, model=GPT)


async def test_200_concurrent_reserves_admit_exactly_the_model_cap(
    capped: BudgetManager,
) -> None:
    await capped.set_limits("project", "p1", model=GPT, daily=10)
    results = await asyncio.gather(
        *(capped.reserve(f"u{i % 7}", "0.1", "p1", model=GPT) for i in range(200)),
        return_exceptions=True,
    )
    granted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BudgetExceededError)]
    assert len(granted) == 100 and len(refused) == 100
    assert all(r.model == GPT for r in refused)
    usage = await capped.get_usage("u0", "p1", model=GPT)
    assert usage["project"].model is not None
    assert usage["project"].model.held == Decimal(10)
    # the other model was never affected
    await capped.reserve("u0", 50, "p1", model=MINI)


async def test_settle_counts_at_the_lease_model_and_ends_its_hold(
    capped: BudgetManager,
) -> None:
    await capped.set_limits("user", "ada", model=GPT, daily=5)
    lease = await capped.reserve("ada", 2, model=GPT)
    assert lease.model == GPT
    usage = await capped.get_usage("ada", model=GPT)
    assert usage["user"].model is not None
    assert usage["user"].model.held == Decimal(2)
    # settled by its id alone: the hold's record remembers the model
    record = await capped.settle(lease.id, 3)
    assert record.kind == "settle"
    model = (await capped.get_usage("ada", model=GPT))["user"].model
    assert model is not None
    assert (model.daily.spent, model.held) == (Decimal(3), Decimal(0))
    with pytest.raises(BudgetExceededError):
        await capped.reserve("ada", "2.5", model=GPT)
    # a settle replayed counts once
    await capped.settle(lease.id, 3)
    model = (await capped.get_usage("ada", model=GPT))["user"].model
    assert model is not None and model.daily.spent == Decimal(3)
    # the lease object carries the model to the ledger's record too
    other = await capped.reserve("ada", 1, model=GPT)
    assert (await capped.settle(other, 1)).model == GPT


async def test_release_and_expiry_end_a_model_hold(
    capped: BudgetManager, clock: FakeClock
) -> None:
    await capped.set_limits("user", "ada", model=GPT, daily=3)
    lease = await capped.reserve("ada", 3, model=GPT)
    with pytest.raises(BudgetExceededError):
        await capped.check_availability("ada", None, 1, model=GPT)
    await capped.release(lease)
    await capped.reserve("ada", 3, model=GPT, ttl_seconds=10)
    with pytest.raises(BudgetExceededError):
        await capped.check_availability("ada", None, 1, model=GPT)
    clock.advance(11)  # the hold expires, and the next admission purges it
    assert await capped.remaining("ada", None, 1, model=GPT) == Decimal(3)
    model = (await capped.get_usage("ada", model=GPT))["user"].model
    assert model is not None and model.held == Decimal(0)


async def test_record_spend_replays_count_once(capped: BudgetManager) -> None:
    await capped.set_limits("user", "ada", model=GPT, daily=2)
    for _ in range(3):
        await capped.record_spend("ada", "1.5", model=GPT, idempotency_key="k1")
    assert await capped.remaining("ada", None, 0, model=GPT) == Decimal("0.5")


async def test_deduct_checks_and_counts_the_model(capped: BudgetManager) -> None:
    await capped.add_credits("ada", 100)
    await capped.set_limits("user", "ada", model=GPT, daily=2)
    result = await capped.deduct("ada", "1.5", model=GPT, idempotency_key="d1")
    await capped.deduct("ada", "1.5", model=GPT, idempotency_key="d1")  # a replay
    with pytest.raises(BudgetExceededError) as refused:
        await capped.deduct("ada", 1, model=GPT)
    assert refused.value.model == GPT and refused.value.window == "daily"
    await capped.deduct("ada", 1, model=MINI)
    await capped.deduct("ada", 1)
    # a refund gives the model its room back
    await capped.refund(result.entry_id, "1")
    assert await capped.remaining("ada", None, 0, model=GPT) == Decimal("1.5")


async def test_reserve_up_to_and_extend_fit_the_model(capped: BudgetManager) -> None:
    await capped.set_limits("user", "ada", model=GPT, monthly=4)
    lease = await capped.reserve_up_to("ada", 10, min_amount=1, model=GPT)
    assert lease.amount == Decimal(4)
    await capped.release(lease)
    lease = await capped.reserve("ada", 3, model=GPT)
    with pytest.raises(BudgetExceededError) as refused:
        await capped.extend(lease, 2)
    assert refused.value.model == GPT
    extended = await capped.extend(lease, 1)
    assert extended.amount == Decimal(4)
    model = (await capped.get_usage("ada", model=GPT))["user"].model
    assert model is not None and model.held == Decimal(4)


async def test_model_ids_cannot_collide_with_scope_ids(
    capped: BudgetManager, redis_client: aioredis.Redis
) -> None:
    # model "a" of user "b:c" and model "a:b" of user "c" share a naive key
    await capped.set_limits("user", "b:c", model="a", daily=1)
    await capped.check_availability("c", None, 5, model="a:b")
    key = capped.keys.of("b:c").model_limits("user", "b:c", "a")
    assert key.endswith("ml:u:1:a:b:c")
    assert capped.keys.model_limits("user", "c", "a:b").endswith("ml:u:3:a:b:c")
    assert await redis_client.get(key) == b"1000000|"  # "<daily>|<monthly>"
    # a multibyte model id is prefixed with its length in bytes, as Lua counts
    await capped.set_limits("user", "ada", model="modèle", daily=1)
    await capped.record_spend("ada", 1, model="modèle")
    with pytest.raises(BudgetExceededError):
        await capped.check_availability("ada", None, "0.1", model="modèle")


@pytest.mark.parametrize("model", ["", " ", "a\nb", "a\x00", "a\x7f", "m" * 257, 5])
async def test_bad_model_ids_are_refused(capped: BudgetManager, model: object) -> None:
    with pytest.raises((InvalidIdError, TypeError)):
        await capped.set_limits("user", "ada", model=model, daily=1)  # type: ignore[arg-type]
    with pytest.raises((InvalidIdError, TypeError)):
        await capped.check_availability("ada", None, 1, model=model)  # type: ignore[arg-type]


async def test_a_model_cap_is_daily_or_monthly(capped: BudgetManager) -> None:
    with pytest.raises(InvalidArgumentError):
        await capped.set_limits("user", "ada", model=GPT, weekly=1)


async def test_off_model_caps_are_refused_and_models_are_not_counted(
    budget: BudgetManager, redis_client: aioredis.Redis, key_prefix: str
) -> None:
    with pytest.raises(InvalidArgumentError, match="model_caps"):
        await budget.set_limits("user", "ada", model=GPT, daily=1)
    with pytest.raises(InvalidArgumentError, match="model_caps"):
        await budget.get_usage("ada", model=GPT)
    # the model of a call is taken (a lease remembers it) and counts nowhere
    lease = await budget.reserve("ada", 1, model=GPT)
    assert lease.model == GPT
    assert await budget.check_availability("ada", None, 1, model=GPT)
    await budget.settle(lease, 1)
    await budget.record_spend("ada", 1, model=GPT)
    base = f"{key_prefix}:{{sg}}:"
    keys = {
        k.decode()[len(base) :] async for k in redis_client.scan_iter(f"{key_prefix}:*")
    }
    assert not {k for k in keys if re.match(r"m[ldmr]:", k)}


def _constants(model_caps: str) -> dict[str, str]:
    constants = {name: "0" for name in SCRIPT_CONSTANTS}
    constants.update(BASE="sg:{sg}:", LOW_BALANCE="-1", MODEL_CAPS=model_caps)
    return constants


def test_with_model_caps_off_the_scripts_are_those_without_the_hooks() -> None:
    """Off, no script carries anything of per-model caps, and the hooks
    are whole tagged lines (``tests/test_cap_actions_spool.py`` checks that
    an unconfigured deployment's scripts are, byte for byte, the files with
    every tagged line gone)."""
    hooked = 0
    for name in SCRIPT_NAMES:
        off = configured_source(name, _constants("0"))
        on = configured_source(name, _constants("1"))
        assert b"model_" not in off.replace(b"F_MODEL", b"")
        assert b"'ml:'" not in off and b"mr:" not in off
        hooked += off != on
    assert hooked >= 9  # every admitting and charging script has hooks
    # the hooks are whole lines, each marked: nothing else changes
    for path in lua_dir().glob("*.lua"):
        if path.name == "_models.lua":  # (its header describes the mark)
            continue
        for line in path.read_text().splitlines():
            if "@models" in line:
                assert re.search(r"--@models\s*$", line), (path.name, line)
    # (after every library an unsharded deployment links: _escrow's alone
    # comes later)
    assert LIBRARIES[-2:] == ("_models", "_escrow")


async def test_model_caps_beside_cap_actions(make_budget: MakeBudget) -> None:
    """Both hooks on: a warn cap on the scope and a model's cap on the same
    user, each doing its own part in the same scripts."""
    both = make_budget(model_caps=True, cap_actions=True)
    await both.set_limits("user", "ada", daily=10, action="warn")
    await both.set_limits("user", "ada", model=GPT, daily=2)
    with pytest.raises(InvalidArgumentError):
        await both.set_limits("user", "ada", model=GPT, daily=2, action="warn")
    await both.record_spend("ada", "1.5", model=GPT)
    with pytest.raises(BudgetExceededError) as refused:
        await both.reserve("ada", 1, model=GPT)
    assert refused.value.model == GPT
    usage = await both.get_usage("ada", model=GPT)
    assert usage["user"].action == "warn"
    assert usage["user"].model is not None
    assert usage["user"].model.daily.spent == Decimal("1.5")
    assert usage["global"].model is not None
    assert usage["global"].model.daily.spent == Decimal("1.5")
