"""Streaming holds for the LiteLLM callback: hold a step, extend as output
accrues, cut the stream at the cap, settle exactly what streamed.

For a streamed chat completion (``stream=True``) the callback of
:mod:`spendgate.integrations.litellm` holds, up front, the prompt plus
``stream_step_tokens`` output tokens at the model's dearest output rate
(without ``stream_step_tokens``: the worst case, as for any call). The
stream then goes through :meth:`SpendgateCallback.guard
<spendgate.integrations.litellm.SpendgateCallback.guard>` (LiteLLM's proxy
does it by itself, through ``async_post_call_streaming_iterator_hook``;
SDK code wraps the stream: ``async for chunk in callback.guard(stream)``).
The guard counts each chunk's output tokens (LiteLLM's token counter, on
the chunk's content, reasoning and tool-call text) before passing it on and
prices the stream so far at the model's exact rates; whenever that would
pass the hold, the lease is extended by one step's worth (or by exactly
what is missing, when a whole step does not fit: a stream runs to the cap
itself), which also renews its TTL. When the budget cannot cover the next
chunk, that chunk is dropped, the provider's stream is closed, the lease is
settled at what was passed on, and the extension's
:class:`~spendgate.BudgetExceededError` is raised to the consumer.

How a guarded stream is charged:

* it ran to its end: as any call, at the usage LiteLLM reports in its
  success event (the provider's figure: hidden reasoning tokens included);
* it was cut at the cap, or the consumer stopped early (the client went
  away: the generator closed, or its task cancelled): settled at once at
  the prompt plus the output passed on, priced exactly (what the provider
  generated beyond the last chunk read is not known, and not charged);
* the provider failed mid-stream: settled at what streamed before the
  error; failed before any chunk: released, as a failed call is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import litellm
from loguru import logger

from spendgate.integrations.litellm_calls import Kind, streamed_texts
from spendgate.integrations.streaming import LeaseMeter

if TYPE_CHECKING:
    from spendgate.manager import BudgetManager
    from spendgate.models import Lease

#: how a guarded stream ended
Ending = Literal["completed", "cut", "failed", "closed"]


class StreamPlan(NamedTuple):
    """What the guard of one streamed completion needs from its admission."""

    model: str
    #: the prompt's tokens, as LiteLLM counted them for the hold
    prompt_tokens: int
    #: output tokens per extension; 0 when the worst case was held
    step_tokens: int


def stream_call_id(stream: object) -> str | None:
    """The LiteLLM call id of a stream (a ``CustomStreamWrapper``'s)."""
    call_id = getattr(getattr(stream, "logging_obj", None), "litellm_call_id", None)
    return str(call_id) if call_id else None


def output_tokens(model: str, chunk: object) -> int:
    """The output tokens a streamed chunk carries, by LiteLLM's counter."""
    count = 0
    for piece in streamed_texts(chunk):
        try:
            count += int(litellm.token_counter(model=model, text=piece))
        except Exception:  # a model LiteLLM cannot count for
            count += len(piece)  # (a token is at least one character)
    return count


class StreamingHolds:
    """The streaming half of ``SpendgateCallback`` (a mixin of it)."""

    budget: BudgetManager
    ttl_seconds: int | None
    _leases: dict[str, Lease]
    _busy: int
    _estimate: Any

    if TYPE_CHECKING:

        async def estimate(
            self, model: str, kwargs: Mapping[str, Any], kind: Kind = "chat"
        ) -> Decimal: ...

        def _prompt_tokens(
            self, model: str, kwargs: Mapping[str, Any], kind: Kind = "chat"
        ) -> int: ...

        async def async_log_success_event(
            self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
        ) -> None: ...

    def _init_streams(self, stream_step_tokens: int | None) -> None:
        if stream_step_tokens is not None and stream_step_tokens < 1:
            raise ValueError("stream_step_tokens must be at least 1")
        self.stream_step_tokens = stream_step_tokens
        #: the plan of each streamed completion admitted, by LiteLLM call id
        self._streams: dict[str, StreamPlan] = {}
        #: streams being guarded now (their leases are the guards')
        self._guarded: set[str] = set()
        #: success events that came while their stream was still guarded
        self._early: dict[str, tuple[Mapping[str, Any], object]] = {}

    def _stream_success(
        self, call_id: str, kwargs: Mapping[str, Any], response_obj: object
    ) -> bool:
        """Whether a success event belongs to a stream still guarded: it is
        then kept for the guard, which hands it on as the stream ends (LiteLLM
        queues the event before the consumer sees the stream's end)."""
        self._streams.pop(call_id, None)  # (a stream read unguarded)
        if call_id not in self._guarded:
            return False
        self._early[call_id] = (kwargs, response_obj)
        return True

    async def _first_hold(
        self, call_id: str, model: str, kwargs: Mapping[str, Any], kind: Kind
    ) -> Decimal:
        """What to reserve for a call; for a streamed completion, its plan
        is kept for :meth:`guard` and, with ``stream_step_tokens``, the hold
        is the prompt plus one step."""
        if kind != "chat" or kwargs.get("stream") is not True:
            return await self.estimate(model, kwargs, kind)
        step = self.stream_step_tokens or 0
        prompt = self._prompt_tokens(model, kwargs, kind)
        self._streams[call_id] = StreamPlan(model, prompt, step)
        if not step or self._estimate is not None:
            return await self.estimate(model, kwargs, kind)
        return self.budget.pricing.estimate(model, prompt, step)

    def guard(
        self, stream: Any, call_id: str | None = None
    ) -> AsyncGenerator[Any, None]:
        """Pass a streamed completion on, chunk by chunk, under its lease:
        extended as output accrues, cut at the cap (raising
        :class:`~spendgate.BudgetExceededError` after the last chunk that
        fitted), settled at what streamed when it ends early (see the module
        docstring). A stream this callback holds no lease for is passed on
        as it is.

        :param stream: what ``await litellm.acompletion(..., stream=True)``
            returned
        :param call_id: its LiteLLM call id; read from the stream when omitted
        """
        return self._metered(stream, call_id or stream_call_id(stream))

    def proxy_stream_hook(
        self, user_api_key_dict: Any, response: Any, request_data: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        """LiteLLM proxy's ``async_post_call_streaming_iterator_hook``:
        :meth:`guard` (the proxy closes it when the client goes away)."""
        call_id = stream_call_id(response) or request_data.get("litellm_call_id")
        return self._metered(response, str(call_id) if call_id else None)

    async def _metered(
        self, stream: Any, call_id: str | None
    ) -> AsyncGenerator[Any, None]:
        # The lease is taken here, at the first chunk asked for: a stream
        # never read keeps its lease with the callback (its events end it).
        plan = self._streams.pop(call_id, None) if call_id else None
        lease = self._leases.pop(call_id, None) if call_id and plan else None
        if call_id is None or lease is None or plan is None:
            async for chunk in stream:
                yield chunk
            return
        self._guarded.add(call_id)
        pricing = self.budget.pricing
        step = pricing.estimate(plan.model, 0, plan.step_tokens)
        meter = LeaseMeter(self.budget, lease, step, ttl_seconds=self.ttl_seconds)
        output = 0
        ending: Ending = "cut"  # (until the prompt's cost is metered)
        try:
            await meter.reach(pricing.calculate(plan.model, plan.prompt_tokens, 0))
            ending = "closed"
            async for chunk in stream:
                tokens = output_tokens(plan.model, chunk)
                if tokens:
                    more = output + tokens
                    ending = "cut"  # unless the use fits
                    await meter.reach(
                        pricing.calculate(plan.model, plan.prompt_tokens, more)
                    )
                    output, ending = more, "closed"
                yield chunk
            ending = "completed"
        except Exception:
            if ending != "cut":
                ending = "failed"
            raise
        finally:
            if ending == "completed":
                # Handed back: LiteLLM's success event, queued by now, settles
                # it at the usage the provider reported.
                self._leases[call_id] = lease
                self._guarded.discard(call_id)
                early = self._early.pop(call_id, None)
                if early is not None:  # it came before the stream's end did
                    await self.async_log_success_event(*early, None, None)
            else:
                await self._end_stream(stream, call_id, meter, plan, output, ending)

    async def _end_stream(
        self,
        stream: Any,
        call_id: str,
        meter: LeaseMeter,
        plan: StreamPlan,
        output: int,
        ending: Ending,
    ) -> None:
        """Settle (or release) the lease, in a task of its own, and close the
        provider's stream: a consumer cancelled again (a client gone) cannot
        stop the charge half way."""
        self._busy += 1
        charge = self._charge_stream(call_id, meter, plan, output, ending)
        charging = asyncio.ensure_future(charge)
        closing = getattr(stream, "aclose", None)
        if ending != "failed" and closing is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(closing())
        await asyncio.shield(charging)

    async def _charge_stream(
        self,
        call_id: str,
        meter: LeaseMeter,
        plan: StreamPlan,
        output: int,
        ending: Ending,
    ) -> None:
        lease, budget = meter.lease, self.budget
        try:
            if ending == "failed" and output == 0:
                await budget.release(lease)
                return
            metadata = {
                "litellm_call_id": call_id,
                "input_tokens": plan.prompt_tokens,
                "output_tokens": output,
                "stream": ending,
            }
            # What was metered, but the prompt always: the provider billed it.
            cost = budget.pricing.calculate(plan.model, plan.prompt_tokens, output)
            await budget.settle(lease, cost, model=plan.model, metadata=metadata)
        except Exception as exc:  # the consumer's error (if any) goes on
            logger.opt(exception=exc).error(
                "spendgate: could not charge streamed LiteLLM call {}: {}",
                call_id,
                exc,
            )
        finally:
            self._guarded.discard(call_id)
            self._early.pop(call_id, None)  # (it came as the consumer left)
            self._busy -= 1
