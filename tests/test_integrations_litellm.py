"""The LiteLLM callback, end to end through ``litellm.acompletion``.

Every call uses LiteLLM's ``mock_response`` (no network: LiteLLM builds the
response, usage included, and runs its real pre-call hooks and success /
failure callbacks), against the real Redis and the embedded fakeredis (the
``make_budget`` fixture). A second, recording ``CustomLogger`` sits beside
ours to capture what LiteLLM reported (usage, its own ``response_cost``), so
each charge is checked against LiteLLM's figures; ``callback.flush()`` waits
for LiteLLM's background logging worker to deliver the events.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import litellm
import pytest
from litellm.integrations.custom_logger import CustomLogger

from conftest import MakeBudget
from spendgate import (
    BudgetConfig,
    BudgetExceededError,
    BudgetManager,
    BudgetUnavailableError,
    InvalidArgumentError,
)
from spendgate.core.money import charge_micros, from_micros
from spendgate.integrations.litellm import SpendgateCallback

# LiteLLM's own models trip pydantic warnings when it builds them lazily
# (mid-test); they are LiteLLM's to fix, not failures of ours.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Items? .* using the `ReadOnly` qualifier:UserWarning"
)

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


class Recorder(CustomLogger):  # type: ignore[misc]
    """Keeps what LiteLLM hands its callbacks, to compare our charges with."""

    def __init__(self) -> None:
        super().__init__()
        self.successes: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []

    async def async_log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        response = kwargs.get("complete_streaming_response") or response_obj
        self.successes.append(
            {
                "call_id": kwargs.get("litellm_call_id"),
                "usage": response.usage,
                "response_cost": kwargs.get("response_cost"),
            }
        )

    async def async_log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self.failures.append(
            {
                "call_id": kwargs.get("litellm_call_id"),
                "exception": kwargs.get("exception"),
            }
        )


_CALLBACK_LISTS = (
    "callbacks",
    "input_callback",
    "success_callback",
    "failure_callback",
    "_async_success_callback",
    "_async_failure_callback",
)


@pytest.fixture(autouse=True)
def _restore_litellm_callbacks() -> Iterator[None]:
    # LiteLLM copies litellm.callbacks into its other (global) callback lists
    # on each call: all of them must be put back, or one test's callback
    # would keep receiving the next test's events.
    saved = {name: list(getattr(litellm, name)) for name in _CALLBACK_LISTS}
    yield
    for name, value in saved.items():
        setattr(litellm, name, value)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def install(callback: SpendgateCallback, recorder: Recorder) -> None:
    litellm.callbacks = [callback, recorder]


def exact(micros_of: Decimal) -> Decimal:
    """What the ledger holds for an exact cost: rounded up to the micro-unit."""
    return from_micros(charge_micros(micros_of))


async def test_completion_is_charged_at_litellms_price(
    make_budget: MakeBudget, recorder: Recorder
) -> None:
    budget = make_budget(daily_user_limit=5)
    callback = SpendgateCallback(budget)
    install(callback, recorder)

    response = await litellm.acompletion(
        model="gpt-4o",
        messages=MESSAGES,
        mock_response="Paris.",
        user="alice",
        metadata={"project_id": "atlas"},
        max_tokens=100,
    )
    assert await callback.flush()

    assert response.choices[0].message.content == "Paris."
    [seen] = recorder.successes
    usage = seen["usage"]
    # gpt-4o in the bundled map: 2.5e-06 per input token, 1e-05 per output token.
    expected = usage.prompt_tokens * Decimal("0.0000025") + usage.completion_tokens * (
        Decimal("0.00001")
    )
    assert callback.cost("gpt-4o", usage) == expected
    assert math.isclose(float(expected), seen["response_cost"], rel_tol=1e-12)

    usage_now = await budget.get_usage("alice", "atlas")
    assert usage_now["user"].daily.spent == exact(expected)
    assert usage_now["project"].daily.spent == exact(expected)
    assert usage_now["user"].held == 0
    assert callback.open_leases == 0


async def test_streaming_response_is_charged_once_after_the_last_chunk(
    make_budget: MakeBudget, recorder: Recorder
) -> None:
    budget = make_budget(daily_user_limit=5)
    callback = SpendgateCallback(budget)
    install(callback, recorder)

    stream = await litellm.acompletion(
        model="gpt-4o",
        messages=MESSAGES,
        mock_response="The capital of France is Paris.",
        user="bob",
        stream=True,
        max_tokens=64,
    )
    # While the stream is open the worst case is held, nothing is spent yet.
    during = await budget.get_usage("bob")
    assert during["user"].held > 0
    assert during["user"].daily.spent == 0

    text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
    assert text == "The capital of France is Paris."
    assert await callback.flush()

    [seen] = recorder.successes
    expected = callback.cost("gpt-4o", seen["usage"])
    assert expected > 0
    assert math.isclose(float(expected), seen["response_cost"], rel_tol=1e-12)
    after = await budget.get_usage("bob")
    assert after["user"].daily.spent == exact(expected)
    assert after["user"].held == 0


async def test_over_budget_call_is_refused_before_the_provider(
    make_budget: MakeBudget, recorder: Recorder
) -> None:
    budget = make_budget(daily_user_limit="0.001")
    callback = SpendgateCallback(budget)
    install(callback, recorder)

    # 1000 output tokens of gpt-4o cost up to 0.01: ten times the cap.
    with pytest.raises(BudgetExceededError) as refused:
        await litellm.acompletion(
            model="gpt-4o",
            messages=MESSAGES,
            mock_response="never sent",
            user="carol",
            max_tokens=1000,
        )
    assert await callback.flush()

    assert refused.value.scope == "user"
    assert refused.value.window == "daily"
    assert refused.value.limit == Decimal("0.001")
    assert recorder.successes == []  # no response was ever produced
    assert [type(f["exception"]) for f in recorder.failures] == [BudgetExceededError]
    usage = await budget.get_usage("carol")
    assert usage["user"].daily.spent == 0
    assert usage["user"].held == 0

    # A call that fits (a small max_tokens) is admitted by the same cap.
    await litellm.acompletion(
        model="gpt-4o",
        messages=MESSAGES,
        mock_response="Paris.",
        user="carol",
        max_tokens=20,
    )
    assert await callback.flush()
    assert (await budget.get_usage("carol"))["user"].daily.spent > 0


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


async def test_failed_call_releases_its_hold(
    make_budget: MakeBudget, recorder: Recorder
) -> None:
    budget = make_budget(daily_user_limit=5)
    callback = SpendgateCallback(budget)
    install(callback, recorder)

    with pytest.raises(Exception, match="provider exploded"):
        await litellm.acompletion(
            model="gpt-4o",
            messages=MESSAGES,
            mock_response=Exception("provider exploded"),
            user="dave",
            max_tokens=100,
        )
    assert await callback.flush()

    usage = await budget.get_usage("dave")
    assert usage["user"].held == 0
    assert usage["user"].daily.spent == 0
    assert callback.open_leases == 0


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


async def test_a_call_naming_no_user_is_refused(
    make_budget: MakeBudget, recorder: Recorder
) -> None:
    budget = make_budget()
    install(SpendgateCallback(budget), recorder)
    with pytest.raises(InvalidArgumentError, match="names no user"):
        await litellm.acompletion(
            model="gpt-4o", messages=MESSAGES, mock_response="x", max_tokens=5
        )
    assert recorder.successes == []

    fallback = SpendgateCallback(budget, default_user="anonymous")
    install(fallback, recorder)
    await litellm.acompletion(
        model="gpt-4o", messages=MESSAGES, mock_response="x", max_tokens=5
    )
    assert await fallback.flush()
    assert (await budget.get_usage("anonymous"))["user"].daily.spent > 0


async def test_concurrent_calls_never_overshoot_the_cap(
    make_budget: MakeBudget, recorder: Recorder
) -> None:
    import asyncio

    budget = make_budget(daily_user_limit="0.005")
    callback = SpendgateCallback(budget)
    install(callback, recorder)

    async def one() -> bool:
        try:
            await litellm.acompletion(
                model="gpt-4o",
                messages=MESSAGES,
                mock_response="Paris.",
                user="eve",
                max_tokens=200,  # a worst case of about 0.002: two or so fit at once
            )
            return True
        except BudgetExceededError:
            return False

    results = await asyncio.gather(*(one() for _ in range(12)))
    assert await callback.flush()

    assert any(results) and not all(results)
    usage = await budget.get_usage("eve")
    assert usage["user"].daily.spent <= Decimal("0.005")
    assert usage["user"].held == 0
    assert len(recorder.successes) == sum(results)


@pytest.fixture
async def unreachable_budget(tmp_path: Path) -> AsyncIterator[BudgetManager]:
    # Nothing listens on port 1: every call fails fast.
    config = BudgetConfig(
        redis_url="redis://127.0.0.1:1/0",
        key_prefix="unreachable",
        spool_path=tmp_path / "spool",
    )
    budget = BudgetManager(config)
    yield budget
    await budget.aclose()


async def test_unreachable_store_fails_closed(
    unreachable_budget: BudgetManager, recorder: Recorder
) -> None:
    install(SpendgateCallback(unreachable_budget), recorder)
    with pytest.raises(BudgetUnavailableError):
        await litellm.acompletion(
            model="gpt-4o",
            messages=MESSAGES,
            mock_response="x",
            user="frank",
            max_tokens=5,
        )
    assert recorder.successes == []


async def test_unreachable_store_with_fail_open_admits_the_call(
    tmp_path: Path, recorder: Recorder
) -> None:
    config = BudgetConfig(
        redis_url="redis://127.0.0.1:1/0",
        key_prefix="unreachable",
        spool_path=tmp_path / "spool",
        fail_open=True,
    )
    budget = BudgetManager(config)
    callback = SpendgateCallback(budget)
    install(callback, recorder)
    try:
        response = await litellm.acompletion(
            model="gpt-4o",
            messages=MESSAGES,
            mock_response="ok",
            user="gina",
            max_tokens=5,
        )
        assert await callback.flush()
    finally:
        await budget.aclose()
    assert response.choices[0].message.content == "ok"
    assert len(recorder.successes) == 1
    # The spend could not reach Redis: it waits in the local spool instead.
    assert any(path.is_file() for path in (tmp_path / "spool").rglob("*"))


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
