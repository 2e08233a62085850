"""LiteLLM integration: one callback admits, charges and refuses every async
LiteLLM call: completions, the Responses API, embeddings and image generation
(see :mod:`spendgate.integrations.litellm_calls` for what each reports).

::

    import litellm
    from spendgate.integrations.litellm import SpendgateCallback

    litellm.callbacks = [SpendgateCallback(budget)]
    await litellm.acompletion(model="gpt-4o", messages=..., user="alice")

How it hooks in (checked against LiteLLM's SDK source, 1.108+): the async
wrapper of ``acompletion`` awaits ``async_pre_call_deployment_hook`` of every
``CustomLogger`` in ``litellm.callbacks`` before the provider is called, outside
any ``try`` that would swallow an error, so an exception raised there aborts
the call and reaches the caller unchanged (after LiteLLM has run its failure
callbacks). ``async_log_pre_api_call`` is not used: LiteLLM runs it as logging
and does not let it stop a call. Success and failure arrive later through
``async_log_success_event`` / ``async_log_failure_event``, queued on LiteLLM's
logging worker (on the caller's event loop); for a stream, the success event
comes once, with the whole response, after the last chunk is consumed.

The life of one call:

1. before it, the worst-case cost (prompt tokens counted by LiteLLM, times the
   dearest input rate, plus ``max_tokens`` — or the model's maximum output —
   times the dearest output rate) is reserved for the calling user, as a lease;
   over budget, the call is refused with :class:`~spendgate.BudgetExceededError`
   and never reaches the provider;
2. on success the lease is settled at the exact cost of the usage LiteLLM
   reports, priced by :class:`~spendgate.pricing.catalog.Pricing` (the active
   price book, the overrides, then LiteLLM's own price, in ``Decimal``);
3. on failure the lease is released: nothing is charged.

Streams can be held a step at a time, cut at the cap and charged what they
streamed: see :mod:`spendgate.integrations.litellm_stream`.

Only the async API is guarded: the sync ``litellm.completion`` does not run the
async pre-call hook (with ``record_unadmitted=True`` a successful sync call
that reports back is still charged, as a fact). LiteLLM's logging worker is
best effort: if it ever drops a success event, the lease stops counting at its
TTL and that call goes uncharged.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any

from loguru import logger

from spendgate.core.money import to_decimal
from spendgate.errors import (
    BudgetUnavailableError,
    InvalidArgumentError,
)
from spendgate.integrations.litellm_calls import (
    OUTPUT_BOUNDS,
    Kind,
    as_int,
    call_kind,
    field,
    metadata_of,
    prompt_of,
    reported_cost,
    usage_tokens,
)
from spendgate.integrations.litellm_stream import StreamingHolds
from spendgate.manager import BudgetManager
from spendgate.models import Lease

# Importing LiteLLM fetches its cost map from the network unless told to use
# the copy bundled in its wheel; an application that wants the live map sets
# the variable (or imports LiteLLM) first.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

try:
    import litellm
    from litellm.integrations.custom_logger import CustomLogger
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "spendgate.integrations.litellm needs LiteLLM: pip install 'spendgate[litellm]'"
    ) from exc

#: ``estimate(model, kwargs)``: the amount to reserve for one call
EstimateFn = Callable[[str, Mapping[str, Any]], Any | Awaitable[Any]]


class SpendgateCallback(StreamingHolds, CustomLogger):
    """A LiteLLM ``CustomLogger`` that puts every async completion under a budget.

    :param budget: the :class:`~spendgate.BudgetManager` to charge
    :param user_key: a metadata key naming the user
        (``metadata={"tenant": "acme"}`` with ``user_key="tenant"``); when it is
        unset or absent from a call, LiteLLM's ``user`` argument is used
    :param project_key: the metadata key naming the project, if any
    :param default_user: the user charged when a call names none; ``None``
        (the default) refuses such calls with ``InvalidArgumentError``
    :param default_max_output_tokens: the output budget of a call that sets
        neither ``max_tokens`` nor ``max_completion_tokens``; ``None`` uses the
        model's maximum output from the cost map (a true worst case)
    :param estimate: ``estimate(model, kwargs)`` returning the amount to reserve
        (a number, or an awaitable of one), replacing the built-in worst case
    :param ttl_seconds: lease TTL; defaults to the config's ``lease_ttl_seconds``
    :param record_unadmitted: also charge (as a fact) a successful call this
        callback did not admit, such as a sync ``litellm.completion``. Off by
        default: two callbacks on one budget would then charge a call twice.
    :param stream_step_tokens: streaming holds: a streamed completion holds
        its prompt plus this many output tokens, and :meth:`guard` extends the
        hold by as many each time the stream needs more (``None``: the worst
        case is held, as for any call). Set it when every stream is guarded.
    """

    def __init__(
        self,
        budget: BudgetManager,
        *,
        user_key: str | None = None,
        project_key: str | None = "project_id",
        default_user: str | None = None,
        default_max_output_tokens: int | None = None,
        estimate: EstimateFn | None = None,
        ttl_seconds: int | None = None,
        record_unadmitted: bool = False,
        stream_step_tokens: int | None = None,
    ) -> None:
        super().__init__()
        self.budget = budget
        self.user_key = user_key
        self.project_key = project_key
        self.default_user = default_user
        self.default_max_output_tokens = default_max_output_tokens
        self._estimate = estimate
        self.ttl_seconds = ttl_seconds
        self.record_unadmitted = record_unadmitted
        #: open leases by LiteLLM call id
        self._leases: dict[str, Lease] = {}
        #: calls admitted without a lease (store down, ``fail_open``)
        self._unleased: set[str] = set()
        #: success / failure events being handled now
        self._busy = 0
        self._init_streams(stream_step_tokens)

    # -- who and how much ------------------------------------------------------

    def _user(self, kwargs: Mapping[str, Any]) -> str:
        if self.user_key is not None:
            named = metadata_of(kwargs).get(self.user_key)
            if named:
                return str(named)
        user = kwargs.get("user")
        if user:
            return str(user)
        if self.default_user is not None:
            return self.default_user
        where = f"metadata[{self.user_key!r}] or " if self.user_key else ""
        raise InvalidArgumentError(
            f"spendgate: this LiteLLM call names no user: pass {where}user=..., "
            "or give SpendgateCallback a default_user"
        )

    def _project(self, kwargs: Mapping[str, Any]) -> str | None:
        if self.project_key is None:
            return None
        project = metadata_of(kwargs).get(self.project_key)
        return str(project) if project else None

    def _max_output_tokens(
        self, model: str, kwargs: Mapping[str, Any], kind: Kind = "chat"
    ) -> int:
        if kind == "embedding":
            return 0
        for key in OUTPUT_BOUNDS[kind]:
            value = as_int(kwargs.get(key))
            if value > 0:
                return value
        if self.default_max_output_tokens is not None:
            return self.default_max_output_tokens
        model_max = self.budget.pricing.price(model).max_output_tokens
        if model_max is None:
            raise InvalidArgumentError(
                f"spendgate: cannot bound the output of {model!r}: pass max_tokens, "
                "or give SpendgateCallback a default_max_output_tokens"
            )
        return model_max

    def _prompt_tokens(
        self, model: str, kwargs: Mapping[str, Any], kind: Kind = "chat"
    ) -> int:
        prompt = prompt_of(kind, kwargs)
        try:
            return int(litellm.token_counter(model=model, **prompt))
        except Exception:  # an exotic message LiteLLM cannot count
            # A token is at least one character in every tokenizer LiteLLM
            # uses, so the characters bound the tokens from above.
            return len(str(next(iter(prompt.values()))))

    async def estimate(
        self, model: str, kwargs: Mapping[str, Any], kind: Kind = "chat"
    ) -> Decimal:
        """The amount reserved for a call: the worst case, unless an
        ``estimate`` function was given."""
        if self._estimate is not None:
            value = self._estimate(model, kwargs)
            if isinstance(value, Awaitable):
                value = await value
            return to_decimal(value)
        choices = max(1, as_int(kwargs.get("n")))
        return self.budget.pricing.estimate(
            model,
            self._prompt_tokens(model, kwargs, kind),
            self._max_output_tokens(model, kwargs, kind) * choices,
        )

    def cost(self, model: str, usage: object) -> Decimal:
        """The exact cost of a response's ``usage`` (a LiteLLM ``Usage`` or a
        dict; a completion's, a Responses API call's or an embedding's)."""
        tokens = usage_tokens(usage)
        return self.budget.pricing.calculate(
            model,
            tokens.input,
            tokens.output,
            cached_input_tokens=tokens.cached,
            cache_creation_input_tokens=tokens.written,
            reasoning_tokens=tokens.reasoning,
        )

    async def _refresh_prices(self) -> None:
        """The active price book, read at most once a second, so calls are
        priced by it; while the store does not answer, by the one last read
        (a charge must still be recorded, and spooled)."""
        with contextlib.suppress(BudgetUnavailableError):
            await self.budget.active_pricing()

    # -- LiteLLM hooks -------------------------------------------------------

    async def async_pre_call_deployment_hook(
        self, kwargs: dict[str, Any], call_type: Any
    ) -> dict[str, Any] | None:
        """Reserve the call's worst case, or refuse it (the exception aborts it)."""
        kind = call_kind(call_type)
        if kind is None:
            return None
        call_id = kwargs.get("litellm_call_id")
        if not call_id or call_id in self._leases:
            return None
        model = str(kwargs.get("model") or "")
        user = self._user(kwargs)
        if kind == "image" and self._estimate is None:
            # Priced per image, beyond spendgate's pricing: refused when the
            # user is already at a cap, charged LiteLLM's cost afterwards.
            await self.budget.check_availability(user, self._project(kwargs))
            self._unleased.add(str(call_id))
            return None
        await self._refresh_prices()
        amount = await self._first_hold(str(call_id), model, kwargs, kind)
        try:
            lease = await self.budget.reserve(
                user,
                amount,
                project_id=self._project(kwargs),
                ttl_seconds=self.ttl_seconds,
            )
        except BudgetUnavailableError:
            if not self.budget.config.fail_open:
                raise
            # Admitted without a hold; the success event records the spend.
            logger.warning("spendgate: store unavailable, admitting (fail_open=True)")
            self._unleased.add(str(call_id))
            return None
        self._leases[str(call_id)] = lease
        return None

    async def async_log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """Settle the call's lease at the exact cost of its usage."""
        self._busy += 1
        try:
            await self._on_success(kwargs, response_obj)
        except Exception as exc:  # LiteLLM would swallow it: say it here
            logger.opt(exception=exc).error(
                "spendgate: could not charge LiteLLM call {}: {}",
                kwargs.get("litellm_call_id"),
                exc,
            )
        finally:
            self._busy -= 1

    async def async_log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """Release the call's lease: a failed call is not charged."""
        self._streams.pop(str(kwargs.get("litellm_call_id")), None)
        self._unleased.discard(str(kwargs.get("litellm_call_id")))
        lease = self._leases.pop(str(kwargs.get("litellm_call_id")), None)
        if lease is None:  # refused before a lease was taken, or not ours
            return
        self._busy += 1
        try:
            await self.budget.release(lease)
        except Exception as exc:  # the hold stops counting at its TTL anyway
            logger.warning("spendgate: could not release lease {}: {}", lease.id, exc)
        finally:
            self._busy -= 1

    async def _on_success(
        self, kwargs: Mapping[str, Any], response_obj: object
    ) -> None:
        call_id = str(kwargs.get("litellm_call_id"))
        if self._stream_success(call_id, kwargs, response_obj):
            return  # (its stream's guard hands it on when the stream ends)
        lease = self._leases.pop(call_id, None)
        admitted_unleased = call_id in self._unleased
        self._unleased.discard(call_id)
        if lease is None and not (admitted_unleased or self.record_unadmitted):
            return  # not admitted by this callback
        model = str(kwargs.get("model") or "")
        if kwargs.get("cache_hit"):
            amount = Decimal(0)  # served from LiteLLM's cache: no provider call
        else:
            await self._refresh_prices()
            amount = reported_cost(self.cost, model, kwargs, response_obj, lease)
        metadata: dict[str, Any] = {"litellm_call_id": call_id}
        usage = field(
            kwargs.get("complete_streaming_response") or response_obj, "usage"
        )
        if usage is not None:  # the ledger row's token columns read these
            tokens = usage_tokens(usage)
            metadata["input_tokens"], metadata["output_tokens"] = tokens[:2]
        if lease is not None:
            await self.budget.settle(
                lease, amount, model=model or None, metadata=metadata
            )
            return
        # A call that reported back without a lease (the sync API, or admitted
        # with fail_open while the store was down) still spent the money.
        try:
            user = self._user(kwargs)
        except InvalidArgumentError:
            logger.warning(
                "spendgate: LiteLLM call {} names no user; its cost {} is not recorded",
                call_id,
                amount,
            )
            return
        await self.budget.record_spend(
            user,
            amount,
            project_id=self._project(kwargs),
            model=model or None,
            idempotency_key=f"litellm:{call_id}",
            metadata=metadata,
        )

    # LiteLLM's proxy passes every stream through this hook, which it looks
    # for in this class itself: the guard.
    async_post_call_streaming_iterator_hook = StreamingHolds.proxy_stream_hook

    # -- operations ----------------------------------------------------------

    @property
    def open_leases(self) -> int:
        """Calls admitted whose success or failure has not arrived yet."""
        return len(self._leases) + len(self._unleased) + len(self._guarded)

    async def flush(self, timeout_seconds: float = 10.0) -> bool:
        """Wait until every admitted call has been settled or released.

        LiteLLM delivers success events from a background worker; await this
        before shutting down (and in tests) so no settle is left behind.

        :return: ``True`` when none is left open, ``False`` on timeout
        """
        deadline = time.monotonic() + timeout_seconds
        while self._leases or self._unleased or self._busy or self._guarded:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True
