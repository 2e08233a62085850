"""The LiteLLM callback guarding calls, end to end through ``litellm.acompletion``.

Every call uses LiteLLM's ``mock_response`` (no network: LiteLLM builds the
response, usage included, and runs its real pre-call hooks and success /
failure callbacks), against the real Redis and the embedded fakeredis (the
``make_budget`` fixture). A second, recording ``CustomLogger`` sits beside
ours to capture what LiteLLM reported (usage, its own ``response_cost``), so
each charge is checked against LiteLLM's figures; ``callback.flush()`` waits
for LiteLLM's background logging worker to deliver the events (the recorder
and the other helpers: tests/litellm_helpers.py). Checked: a completion and a
stream are charged once at LiteLLM's price (a stream holds its worst case
while open); a call over budget is refused before the provider, a failed call
releases its hold, a call naming no user is refused unless there is a default
user; concurrent calls never overshoot the cap; an unreachable store fails
closed, or admits the call and spools its spend with ``fail_open``. What a
call is charged and priced by is in tests/test_integrations_litellm_pricing.py.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

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
from spendgate import (
    BudgetConfig,
    BudgetExceededError,
    BudgetManager,
    BudgetUnavailableError,
    InvalidArgumentError,
)
from spendgate.integrations.litellm import SpendgateCallback

pytestmark = LITELLM_WARNINGS

__all__ = ["_restore_litellm_callbacks", "recorder"]  # (the fixtures, used by name)


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
