"""Streaming holds in the LiteLLM callback, end to end through
``litellm.acompletion(..., stream=True)`` with ``mock_response`` (LiteLLM
streams it three characters a chunk, through its real stream wrapper).

Both backends (``make_budget``). The callback holds the prompt plus
``stream_step_tokens`` up front; the stream is read through
``callback.guard`` (or the proxy's hook). Each test computes what should
be charged on its own, from the chunks the consumer received: LiteLLM's
token counter on the prompt and on each chunk's text, priced at the
model's exact rates. Checked: a stream past the budget is cut at the cap
(the next chunk would not fit) and charged exactly what it streamed; a
stream within budget is extended as it grows and charged LiteLLM's usage;
a consumer that stops, or is cancelled, mid-stream is charged what it read
and the provider's stream is closed; a provider failure mid-stream charges
what streamed, before any chunk it charges nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import litellm
import pytest

from conftest import LITELLM_WARNINGS, MakeBudget
from litellm_helpers import (  # (its fixture restores LiteLLM's lists)
    MESSAGES,
    Recorder,
    _restore_litellm_callbacks,
    install,
)
from spendgate import BudgetExceededError, BudgetManager
from spendgate.core.money import charge_micros, from_micros
from spendgate.integrations.litellm import SpendgateCallback
from spendgate.integrations.litellm_stream import stream_call_id

pytestmark = LITELLM_WARNINGS
__all__ = ["_restore_litellm_callbacks"]

MODEL = "gpt-4o"
TEXT = "The quick brown fox jumps over the lazy dog. " * 30
#: gpt-4o in LiteLLM's bundled map: 2.5e-06 per input token, 1e-05 per output
CAP = Decimal("0.0004")  # the prompt and about 36 output tokens


def prompt_tokens() -> int:
    return int(litellm.token_counter(model=MODEL, messages=MESSAGES))


def tokens(text: str) -> int:
    return int(litellm.token_counter(model=MODEL, text=text)) if text else 0


def charge(budget: BudgetManager, pieces: list[str]) -> Decimal:
    """What streaming ``pieces`` costs, as the ledger holds it."""
    output = sum(tokens(piece) for piece in pieces)
    cost = budget.pricing.calculate(MODEL, prompt_tokens(), output)
    return from_micros(charge_micros(cost))


def text_of(chunk: Any) -> str:
    return str(chunk.choices[0].delta.content or "") if chunk.choices else ""


async def open_stream(user: str = "ada") -> Any:
    return await litellm.acompletion(
        model=MODEL, messages=MESSAGES, mock_response=TEXT, user=user, stream=True
    )


class Upstream:
    """The provider's stream with a hand on it: after ``after`` chunks it
    stalls for good (``fail`` unset) or raises ``fail``."""

    def __init__(self, stream: Any, after: int, fail: Exception | None = None) -> None:
        self.stream, self.after, self.fail = stream, after, fail
        self.stalled = asyncio.Event()
        self.closed = False
        self.end_after: asyncio.Event | None = None

    def __aiter__(self) -> Upstream:
        return self

    async def __anext__(self) -> Any:
        if self.after == 0:
            if self.fail is not None:
                raise self.fail
            self.stalled.set()
            await asyncio.Event().wait()
        self.after -= 1
        try:
            return await self.stream.__anext__()
        except StopAsyncIteration:
            if self.end_after is not None:  # its end reaches the guard late
                await self.end_after.wait()
            raise

    async def aclose(self) -> None:
        self.closed = True
        await self.stream.aclose()


@pytest.fixture
def budget(make_budget: MakeBudget) -> BudgetManager:
    return make_budget(daily_user_limit=CAP)


@pytest.fixture
def callback(budget: BudgetManager) -> Iterator[SpendgateCallback]:
    callback = SpendgateCallback(budget, stream_step_tokens=8)
    install(callback, Recorder())
    yield callback


async def _spent_and_held(budget: BudgetManager) -> tuple[Decimal, Decimal]:
    user = (await budget.get_usage("ada"))["user"]
    return user.daily.spent, user.held


@pytest.mark.parametrize("through", ["guard", "proxy hook"])
async def test_a_stream_past_the_budget_is_cut_at_the_cap(
    budget: BudgetManager, callback: SpendgateCallback, through: str
) -> None:
    stream = await open_stream()
    first_hold = budget.pricing.estimate(MODEL, prompt_tokens(), 8)
    assert (await _spent_and_held(budget))[1] == from_micros(charge_micros(first_hold))
    if through == "guard":
        guarded = callback.guard(stream)
    else:  # LiteLLM's proxy finds the hook in the class itself
        assert "async_post_call_streaming_iterator_hook" in vars(SpendgateCallback)
        guarded = callback.async_post_call_streaming_iterator_hook(None, stream, {})
    pieces: list[str] = []
    with pytest.raises(BudgetExceededError) as cut:
        async for chunk in guarded:
            pieces.append(text_of(chunk))
    assert cut.value.window == "daily" and cut.value.scope_id == "ada"
    assert await callback.flush()

    streamed = "".join(pieces)
    assert TEXT.startswith(streamed) and 0 < len(streamed) < len(TEXT)
    spent, held = await _spent_and_held(budget)
    assert held == 0
    assert spent == charge(budget, pieces) <= CAP  # exactly what it streamed
    # cut at the cap: the next chunk would not have fitted
    following = TEXT[len(streamed) : len(streamed) + 3]
    assert charge(budget, [*pieces, following]) > CAP
    assert callback.open_leases == 0


async def test_a_stream_within_budget_grows_its_hold_and_is_charged_its_usage(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(daily_user_limit="1")
    callback = SpendgateCallback(budget, stream_step_tokens=4)
    recorder = Recorder()
    install(callback, recorder)
    first_hold = from_micros(
        charge_micros(budget.pricing.estimate(MODEL, prompt_tokens(), 4))
    )
    stream = await open_stream()
    pieces, holds = [], []
    async for chunk in callback.guard(stream):
        pieces.append(text_of(chunk))
        holds.append((await _spent_and_held(budget))[1])
    assert "".join(pieces) == TEXT
    assert holds[0] == first_hold and holds[-1] > 50 * first_hold
    assert await callback.flush()
    # it ran to its end: settled at the usage LiteLLM reported
    [seen] = recorder.successes
    expected = from_micros(charge_micros(callback.cost(MODEL, seen["usage"])))
    assert await _spent_and_held(budget) == (expected, 0)


async def test_a_success_event_before_the_streams_end_is_handed_on(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(daily_user_limit="1")
    callback = SpendgateCallback(budget, stream_step_tokens=4)
    recorder = Recorder()
    install(callback, recorder)
    upstream = Upstream(await open_stream(), after=1000)
    upstream.end_after = asyncio.Event()

    async def delivered() -> None:  # LiteLLM's success event reached both
        while not recorder.successes:
            await asyncio.sleep(0.005)
        upstream.end_after.set()  # type: ignore[union-attr]

    waiting = asyncio.create_task(delivered())
    call_id = stream_call_id(upstream.stream)
    pieces = [text_of(chunk) async for chunk in callback.guard(upstream, call_id)]
    await waiting
    assert "".join(pieces) == TEXT
    assert await callback.flush()
    [seen] = recorder.successes
    expected = from_micros(charge_micros(callback.cost(MODEL, seen["usage"])))
    assert await _spent_and_held(budget) == (expected, 0)
    assert callback.open_leases == 0


async def test_a_consumer_that_stops_early_is_charged_what_it_read(
    budget: BudgetManager, callback: SpendgateCallback
) -> None:
    upstream = Upstream(await open_stream(), after=1000)
    pieces: list[str] = []
    async with contextlib.aclosing(
        callback.guard(upstream, stream_call_id(upstream.stream))
    ) as guarded:
        async for chunk in guarded:
            pieces.append(text_of(chunk))
            if len(pieces) == 5:
                break
    assert await callback.flush()
    assert upstream.closed  # the provider's stream is closed
    assert await _spent_and_held(budget) == (charge(budget, pieces), 0)


async def test_a_cancelled_consumer_is_charged_what_it_read(
    budget: BudgetManager, callback: SpendgateCallback
) -> None:
    upstream = Upstream(await open_stream(), after=7)
    pieces: list[str] = []

    async def consume() -> None:
        guarded = callback.guard(upstream, stream_call_id(upstream.stream))
        async for chunk in guarded:
            pieces.append(text_of(chunk))

    reading = asyncio.create_task(consume())
    await upstream.stalled.wait()  # the provider is slow; the client leaves
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert await callback.flush()
    assert len(pieces) == 7 and upstream.closed
    assert await _spent_and_held(budget) == (charge(budget, pieces), 0)


@pytest.mark.parametrize("after", [0, 6])
async def test_a_provider_failure_charges_what_streamed(
    budget: BudgetManager, callback: SpendgateCallback, after: int
) -> None:
    upstream = Upstream(await open_stream(), after, RuntimeError("provider died"))
    pieces: list[str] = []
    with pytest.raises(RuntimeError, match="provider died"):
        async for chunk in callback.guard(upstream, stream_call_id(upstream.stream)):
            pieces.append(text_of(chunk))
    assert await callback.flush()
    assert len(pieces) == after
    # before any chunk: released, as a failed call is; else what streamed
    expected = charge(budget, pieces) if after else Decimal(0)
    assert await _spent_and_held(budget) == (expected, 0)


async def test_an_unguarded_stream_is_still_charged_its_usage(
    make_budget: MakeBudget,
) -> None:
    budget = make_budget(daily_user_limit="1")
    callback = SpendgateCallback(budget, stream_step_tokens=4)
    recorder = Recorder()
    install(callback, recorder)
    stream = await open_stream()
    assert "".join([text_of(chunk) async for chunk in stream]) == TEXT
    assert await callback.flush()
    [seen] = recorder.successes
    expected = from_micros(charge_micros(callback.cost(MODEL, seen["usage"])))
    assert await _spent_and_held(budget) == (expected, 0)
    assert not callback._streams  # nothing of the stream is kept


def test_a_step_below_one_token_is_refused(budget: BudgetManager) -> None:
    with pytest.raises(ValueError):
        SpendgateCallback(budget, stream_step_tokens=0)


async def test_a_stream_without_a_plan_passes_through_and_keeps_its_lease(
    budget: BudgetManager, callback: SpendgateCallback
) -> None:
    # (a stream the callback made no plan for, such as the Responses API's:
    # its success event still needs its lease)
    lease = await budget.reserve("ada", "0.0001")
    callback._leases["not-planned"] = lease

    async def events() -> Any:
        for event in ("a", "b"):
            yield event

    assert [e async for e in callback.guard(events(), "not-planned")] == ["a", "b"]
    assert callback._leases["not-planned"] is lease
