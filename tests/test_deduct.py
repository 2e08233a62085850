"""``deduct``: one script prices nothing on the server but checks the caps and
the balance above its floor and charges, or refuses and changes nothing.

On both backends: 200 concurrent deducts against a balance that covers 10
admit exactly 10 and leave exactly what is left; a refusal (balance or cap)
leaves every key as it was; a replayed key charges once; an unavailable
store fails closed unless the caller opted into spooling the charge.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from conftest import MakeBudget, deployment_keys, stream_entries
from spendgate import (
    BudgetExceededError,
    BudgetManager,
    BudgetUnavailableError,
    IdempotencyConflictError,
    InsufficientCreditsError,
    InvalidArgumentError,
    InvalidIdError,
    TeamNotFoundError,
    UsageMetrics,
)


async def _snapshot(budget: BudgetManager) -> dict[bytes, Any]:
    client = budget.redis
    keys = sorted(await deployment_keys(budget))
    values = {}
    for key in keys:
        kind = await client.type(key)
        if kind == b"string":
            values[key] = await client.get(key)
        elif kind == b"stream":
            values[key] = await client.xlen(key)
        else:
            values[key] = kind
    return values


async def test_concurrent_deducts_admit_exactly_what_the_balance_covers(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget()
    await budget.add_credits("ada", "10")
    results = await asyncio.gather(
        *(budget.deduct("ada", "1") for _ in range(200)), return_exceptions=True
    )
    charged = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, InsufficientCreditsError)]
    others = [r for r in results if isinstance(r, BaseException) and r not in refused]
    assert (len(charged), len(refused), others[:1]) == (10, 190, [])
    assert sorted(r.balance_after for r in charged) == [Decimal(n) for n in range(10)]
    usage = await budget.get_usage("ada")
    assert usage["user"].daily.spent == Decimal(10)
    assert (await budget.redis.get(budget.keys.of("ada").balance("ada"))) == b"0"


async def test_a_refused_deduct_changes_no_key(make_budget: MakeBudget) -> None:
    budget = make_budget(daily_user_limit="5")
    await budget.add_credits("ada", "3")
    await budget.deduct("ada", "2")
    before = await _snapshot(budget)
    with pytest.raises(InsufficientCreditsError) as short:
        await budget.deduct("ada", "1.5", idempotency_key="k1")
    assert short.value.window == "balance" and short.value.limit == Decimal(1)
    await budget.add_credits("ada", "100")
    before = await _snapshot(budget)
    with pytest.raises(BudgetExceededError) as capped:
        await budget.deduct("ada", "3.5", idempotency_key="k2")
    assert not isinstance(capped.value, InsufficientCreditsError)
    assert capped.value.window == "daily"
    assert await _snapshot(budget) == before


async def test_deduct_always_enforces_the_balance(make_budget: MakeBudget) -> None:
    budget = make_budget(enforce_balance=False)
    with pytest.raises(InsufficientCreditsError):
        await budget.deduct("nobody", "0.01")
    # ... above the configured floor: a credit line lets it go below zero
    lined = make_budget(min_balance="-5")
    result = await lined.deduct("ada", "4")
    assert result.balance_after == Decimal(-4)


async def test_a_replayed_deduct_charges_once(make_budget: MakeBudget) -> None:
    budget = make_budget()
    await budget.add_credits("ada", "10")
    first = await budget.deduct("ada", "2.5", idempotency_key="job-1")
    again = await budget.deduct("ada", "2.5", idempotency_key="job-1")
    assert again.replayed and not first.replayed
    assert (again.entry_id, again.amount, again.balance_after) == (
        first.entry_id,
        Decimal("2.5"),
        Decimal("7.5"),
    )
    with pytest.raises(IdempotencyConflictError):
        await budget.deduct("ada", "3", idempotency_key="job-1")
    assert (await budget.get_usage("ada"))["user"].daily.spent == Decimal("2.5")


async def test_a_key_reused_for_another_model_is_a_conflict(
    make_budget: MakeBudget,
) -> None:
    """An amount's model is part of its call: the same key with another
    model (or none) is a conflict, on the user's balance and a team's pool."""
    budget = make_budget()
    await budget.add_credits("ada", "10")
    await budget.create_team("eng", initial_balance=10)
    await budget.add_team_member("eng", "ada")
    for team, key in ((None, "own"), ("eng", "pool")):
        await budget.deduct("ada", 1, team_id=team, idempotency_key=key, model="a")
        again = await budget.deduct(
            "ada", 1, team_id=team, idempotency_key=key, model="a"
        )
        assert again.replayed
        for other in ("b", None):
            with pytest.raises(IdempotencyConflictError):
                await budget.deduct(
                    "ada", 1, team_id=team, idempotency_key=key, model=other
                )
    assert (await budget.get_balance("ada")).total == 9
    assert (await budget.get_team("eng")).balance == 9


async def test_deduct_writes_one_ledger_entry(make_budget: MakeBudget) -> None:
    budget = make_budget()
    await budget.add_credits("ada", "10")
    result = await budget.deduct("ada", "1.25", project_id="p", metadata={"job": "x"})
    entries = await stream_entries(budget)
    fields = entries[-1][1]
    assert fields[b"e"] == result.entry_id.encode() and fields[b"k"] == b"spend"
    assert fields[b"a"] == b"1250000" and fields[b"p"] == b"p"
    assert b'"job":"x"' in fields[b"md"]


async def test_deduct_refuses_bad_input_and_reserved_metadata(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget()
    for bad in ("-1", "NaN", None, True):
        with pytest.raises(InvalidArgumentError):
            await budget.deduct("ada", bad)
    with pytest.raises(InvalidArgumentError):
        await budget.deduct("ada", "1", metadata={"pricing": 1})
    assert await _snapshot(budget) == {}


_BAD_MODELS = ("", " ", "m" * 10_000, "\ud800")


@pytest.mark.parametrize("model_caps", [False, True])
async def test_a_usages_model_is_checked_as_an_amounts_is(
    make_budget: MakeBudget, model_caps: bool
) -> None:
    """The ledger row and the per-model counters carry a usage's model as
    they carry an amount's: a blank, overlong or unencodable one is an
    ``InvalidIdError`` (an ``InvalidArgumentError``), and nothing is
    charged."""
    budget = make_budget(model_caps=model_caps)
    await budget.add_credits("ada", "10")
    await budget.publish_pricing({"models": {"_default": "input_tokens * 0.001"}})
    before = await _snapshot(budget)
    for bad in _BAD_MODELS:
        usage = UsageMetrics(model=bad, input_tokens=1000)
        with pytest.raises(InvalidIdError):
            await budget.deduct("ada", usage)
        with pytest.raises(InvalidIdError):
            await budget.deduct("ada", usage, idempotency_key="k")
    assert await _snapshot(budget) == before


async def test_a_usages_model_is_checked_on_a_teams_pool(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget()
    await budget.create_team("eng", initial_balance=10)
    await budget.add_team_member("eng", "ada")
    await budget.publish_pricing({"models": {"_default": "input_tokens * 0.001"}})
    before = await _snapshot(budget)
    for bad in _BAD_MODELS:
        usage = UsageMetrics(model=bad, input_tokens=1000)
        with pytest.raises(InvalidIdError):
            await budget.deduct("ada", usage, team_id="eng", idempotency_key="k")
    assert await _snapshot(budget) == before


async def test_a_zero_deduct_touches_nothing(make_budget: MakeBudget) -> None:
    budget = make_budget()
    result = await budget.deduct("ada", "0")
    assert result.amount == 0 and result.entry_id == ""
    assert await _snapshot(budget) == {}


async def test_unavailable_store_fails_closed_unless_spooling_is_asked(
    tmp_path: Any,
) -> None:
    from spendgate import BudgetConfig

    config = BudgetConfig(
        redis_url="redis://127.0.0.1:1/0",
        spool_path=tmp_path / "spool",
        redis_connect_timeout_seconds=0.05,
    )
    async with BudgetManager(config) as budget:
        with pytest.raises(BudgetUnavailableError):
            await budget.deduct("ada", "1")
        spooled = await budget.deduct(
            "ada", "1", idempotency_key="k", spool_when_unavailable=True
        )
        assert spooled.spooled and spooled.amount == Decimal(1)
        assert budget.spool is not None and budget.spool.depth == 1


@pytest.mark.parametrize(
    "tools",
    [(), ("web_search",), ("web_search", 'we"ird\\name', "é")],
    ids=["none", "plain", "escaped"],
)
def test_the_fast_metadata_is_the_json_the_general_path_writes(
    tools: tuple[str, ...],
) -> None:
    """A deduct builds its own metadata without json.dumps when the caller
    gave none: it must be exactly what encode_metadata writes."""
    from spendgate import PricingEngine, ToolCall, UsageMetrics
    from spendgate.core.ids import encode_metadata
    from spendgate.ops.deduct_metadata import ledger_metadata as _ledger_metadata
    from spendgate.ops.deduct_metadata import pricing_of as _pricing_of

    engine = PricingEngine.from_dict(
        {
            "version": 1,
            "models": {"_default": "input_tokens * 0.000001 + output_tokens * 3"},
            "tools": {"web_search": "this_tool_calls * 0.01", "_default": "tool_calls"},
            "cache": {"discount": "-cache_read_tokens * 0.0000012"},
        }
    )
    usage = UsageMetrics(
        model="m",
        input_tokens=1234,
        output_tokens=5,
        cache_read_tokens=7,
        tool_calls=tuple(ToolCall(name=t) for t in tools),
    )
    breakdown = engine.calculate(usage)
    for version in (None, 12):
        general = encode_metadata(
            {
                "pricing": _pricing_of(breakdown, version),
                "usage": {"input_tokens": 1234, "output_tokens": 5},
            },
            8192,
        )
        assert _ledger_metadata({}, usage, breakdown, version, 8192) == general


@pytest.mark.parametrize(
    "model",
    ["input_tokens * 1E1", "input_tokens * 0.0000001", "input_tokens * 0"],
    ids=["large-exponent", "small-exponent", "zero"],
)
def test_the_fast_metadata_writes_amounts_without_an_exponent(model: str) -> None:
    """Decimal's str() writes 1.234E+4 and 1.234E-4; the ledger's readers
    parse fixed-point only: the fast metadata must stay what the general path
    (format "f") writes, whatever the exponent."""
    from spendgate import PricingEngine, UsageMetrics
    from spendgate.core.ids import encode_metadata
    from spendgate.ops.deduct_metadata import ledger_metadata as _ledger_metadata
    from spendgate.ops.deduct_metadata import pricing_of as _pricing_of

    engine = PricingEngine.from_dict({"version": 1, "models": {"_default": model}})
    usage = UsageMetrics(model="m", input_tokens=1234, output_tokens=5)
    breakdown = engine.calculate(usage)
    general = encode_metadata(
        {
            "pricing": _pricing_of(breakdown, 3),
            "usage": {"input_tokens": 1234, "output_tokens": 5},
        },
        8192,
    )
    fast = _ledger_metadata({}, usage, breakdown, 3, 8192)
    assert fast == general
    assert "E" not in fast


async def test_a_team_that_does_not_exist_is_refused(make_budget: MakeBudget) -> None:
    """A charge to a team pool that is not there is refused, never silently
    charged to the user instead (teams: tests/test_teams.py)."""
    budget = make_budget()
    await budget.add_credits("ada", "10")
    with pytest.raises(TeamNotFoundError):
        await budget.deduct("ada", "1", team_id="eng")
    assert (await budget.get_usage("ada"))["user"].daily.spent == 0
    assert (await budget.get_balance("ada")).total == 10
