"""What the LiteLLM callback charges a call and what prices it, end to end
through LiteLLM (``acompletion``, ``aembedding``, ``aresponses``).

Every call uses LiteLLM's ``mock_response`` (no network), against the real
Redis and the embedded fakeredis (the ``make_budget`` fixture), with the
recording ``CustomLogger`` of tests/litellm_helpers.py beside ours. Checked:
the worst case held without ``max_tokens`` is the model's maximum output (or
the callback's default); the user can come from a metadata key and
``model_price_overrides`` price the call; the ledger rows carry the call's
tokens; embeddings and Responses API calls are guarded and charged; the
active price book prices the callback's calls (and ``budget.pricing``), with
LiteLLM's price for a model it does not name.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import litellm
import pytest

from conftest import LITELLM_WARNINGS, MakeBudget
from litellm_helpers import (
    MESSAGES,
    Recorder,
    _restore_litellm_callbacks,
    exact,
    install,
    recorder,
)
from spendgate import BudgetExceededError, BudgetManager
from spendgate.integrations.litellm import SpendgateCallback

pytestmark = LITELLM_WARNINGS

__all__ = ["_restore_litellm_callbacks", "recorder"]  # (the fixtures, used by name)


async def test_worst_case_without_max_tokens_is_the_models_maximum_output(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget()
    callback = SpendgateCallback(budget)
    kwargs = {"model": "gpt-4o", "messages": MESSAGES}
    prompt = litellm.token_counter(model="gpt-4o", messages=MESSAGES)
    # gpt-4o: 16384 output tokens at most.
    expected = prompt * Decimal("0.0000025") + 16384 * Decimal("0.00001")
    assert await callback.estimate("gpt-4o", kwargs) == expected
    assert await callback.estimate("gpt-4o", {**kwargs, "max_tokens": 10, "n": 3}) == (
        prompt * Decimal("0.0000025") + 30 * Decimal("0.00001")
    )
    capped = SpendgateCallback(budget, default_max_output_tokens=100)
    assert await capped.estimate("gpt-4o", kwargs) == (
        prompt * Decimal("0.0000025") + 100 * Decimal("0.00001")
    )


async def test_user_from_a_metadata_key_and_override_prices(
    make_budget: MakeBudget, recorder: Recorder
) -> None:
    budget = make_budget(
        model_price_overrides={
            "gpt-4o": {
                "input_cost_per_token": "0.001",
                "output_cost_per_token": "0.002",
            }
        }
    )
    callback = SpendgateCallback(budget, user_key="tenant")
    install(callback, recorder)

    await litellm.acompletion(
        model="gpt-4o",
        messages=MESSAGES,
        mock_response="Paris.",
        user="ignored-when-tenant-is-set",
        metadata={"tenant": "acme"},
        max_tokens=50,
    )
    assert await callback.flush()

    usage = recorder.successes[0]["usage"]
    expected = usage.prompt_tokens * Decimal(
        "0.001"
    ) + usage.completion_tokens * Decimal("0.002")
    assert (await budget.get_usage("acme"))["user"].daily.spent == expected
    ignored = await budget.get_usage("ignored-when-tenant-is-set")
    assert ignored["user"].daily.spent == 0


async def _ledger_metadata(budget: BudgetManager) -> list[dict[str, Any]]:
    import json

    entries = await budget.redis.xrange(budget.keys.ledger)
    return [json.loads(fields[b"md"]) for _, fields in entries if fields.get(b"md")]


async def test_ledger_rows_carry_the_calls_tokens(
    make_budget: MakeBudget, recorder: Recorder
) -> None:
    """The flusher fills input_tokens/output_tokens from these metadata keys."""
    budget = make_budget(daily_user_limit=5)
    callback = SpendgateCallback(budget)
    install(callback, recorder)
    await litellm.acompletion(
        model="gpt-4o",
        messages=MESSAGES,
        mock_response="Paris.",
        user="alice",
        max_tokens=50,
    )
    assert await callback.flush()
    [seen] = recorder.successes
    [meta] = await _ledger_metadata(budget)
    assert meta["input_tokens"] == seen["usage"].prompt_tokens > 0
    assert meta["output_tokens"] == seen["usage"].completion_tokens > 0


async def test_embeddings_are_guarded_and_charged(
    make_budget: MakeBudget, recorder: Recorder
) -> None:
    budget = make_budget(daily_user_limit="0.001")
    callback = SpendgateCallback(budget)
    install(callback, recorder)
    model = "text-embedding-3-small"
    await litellm.aembedding(
        model=model, input=["hello world"], mock_response=[0.1, 0.2], user="alice"
    )
    assert await callback.flush()
    [seen] = recorder.successes
    rate = budget.pricing.price(model).input_cost_per_token
    expected = seen["usage"].prompt_tokens * rate
    usage = await budget.get_usage("alice")
    assert usage["user"].daily.spent == exact(expected) > 0
    assert usage["user"].held == 0
    [meta] = await _ledger_metadata(budget)
    assert meta["input_tokens"] == seen["usage"].prompt_tokens

    await budget.record_spend("bob", "0.001")  # bob is at his cap
    with pytest.raises(BudgetExceededError):
        await litellm.aembedding(
            model=model, input=["hello"], mock_response=[0.1], user="bob"
        )
    assert len(recorder.successes) == 1  # never reached the (mock) provider


async def test_responses_api_calls_are_guarded_and_charged(
    make_budget: MakeBudget, recorder: Recorder
) -> None:
    budget = make_budget(daily_user_limit=5)
    callback = SpendgateCallback(budget)
    install(callback, recorder)
    await litellm.aresponses(
        model="gpt-4o",
        input="hi",
        mock_response="ok",
        user="alice",
        max_output_tokens=200,
    )
    assert await callback.flush()
    usage = (await budget.get_usage("alice"))["user"]
    [meta] = await _ledger_metadata(budget)
    assert meta["input_tokens"] > 0 and meta["output_tokens"] > 0
    expected = meta["input_tokens"] * Decimal("0.0000025") + meta[
        "output_tokens"
    ] * Decimal("0.00001")
    assert usage.daily.spent == exact(expected) and usage.held == 0


async def test_the_active_price_book_prices_the_callbacks_calls(
    make_budget: MakeBudget, recorder: Recorder
) -> None:
    """Resolution: the active book (the model, else its _default) first,
    then the overrides and LiteLLM's map; budget.pricing follows it too."""
    budget = make_budget(daily_user_limit=5)
    await budget.publish_pricing(
        {"version": 1, "models": {"gpt-4o": "input_tokens * 0.001 + output_tokens"}}
    )
    await budget.active_pricing()
    assert budget.pricing.calculate("gpt-4o", 10, 2) == Decimal("2.010")
    assert budget.pricing.calculate_cost("gpt-4o", 10, 2) == Decimal("2.010")
    # a model the book does not name (and no _default): LiteLLM's price
    litellm_price = budget.pricing.price("gpt-4o-mini").input_cost_per_token
    assert budget.pricing.calculate("gpt-4o-mini", 10, 0) == 10 * litellm_price

    callback = SpendgateCallback(budget)
    install(callback, recorder)
    await litellm.acompletion(
        model="gpt-4o",
        messages=MESSAGES,
        mock_response="Paris.",
        user="alice",
        max_tokens=2,
    )
    assert await callback.flush()
    [seen] = recorder.successes
    expected = (
        seen["usage"].prompt_tokens * Decimal("0.001") + seen["usage"].completion_tokens
    )
    usage = (await budget.get_usage("alice"))["user"]
    assert usage.daily.spent == exact(expected) and usage.held == 0
