"""Exact model prices: the active price book first (the model's expression,
else its ``_default``), then ``config.model_price_overrides``, then LiteLLM's
model cost map, then ``config.default_model_price``.

LiteLLM is imported on first use, never by ``import spendgate``. When this
module is the one importing it, ``LITELLM_LOCAL_MODEL_COST_MAP=True`` is set
first (unless the environment already says otherwise), so LiteLLM reads the
cost map bundled in its wheel and nothing is fetched from the network. When
the application imported LiteLLM itself, its live ``litellm.model_cost`` is
used as it is: the same map LiteLLM prices with.

Prices in the cost map are JSON numbers, held by LiteLLM as floats; each is
converted to ``Decimal`` through its shortest repr (``2.5e-06`` becomes
exactly ``0.0000025``), and the arithmetic is ``Decimal`` throughout, so a
cost is the exact product of prices and token counts, never a float sum.

What "agrees with LiteLLM" means: for a model priced per token, LiteLLM's
``cost_per_token`` computes the same formula in floats, so its result is our
exact ``Decimal`` plus float rounding noise (a relative error of a few parts
in 1e16). ``float(ours)`` and LiteLLM's float are therefore equal to within
that noise (``math.isclose(..., rel_tol=1e-12)``); the tests check exactly
that over a sample of the cost map. Comparing after rounding both to the
micro-unit is *not* the criterion: an exact cost that lies on a micro-unit
boundary (``0.0075``) can come out of LiteLLM as ``0.007500000000000001``,
which rounds up to another micro-unit. spendgate charges the exact value,
rounded up to the micro-unit once, at the ledger.

Covered: per-token input and output prices, cache reads
(``cache_read_input_token_cost``, with Fireworks' half-price default) and
cache writes (``cache_creation_input_token_cost``), reasoning tokens
(``output_cost_per_reasoning_token``), the long-context tiers LiteLLM writes
as ``*_above_<N>[k]_tokens`` and ``tiered_pricing`` tables. Not covered:
service tiers (priority, flex, batch), off-peak discounts (the standard,
higher rate is charged at every hour: never an under-charge), regional
uplifts, providers with their own cost formula, and per-image / per-second /
per-character prices. A model priced only per image, second or character is
unknown to :class:`Pricing`.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from spendgate.errors import (
    ConfigurationError,
    InvalidArgumentError,
    UnknownModelError,
)
from spendgate.pricing.rates import (
    _INCLUSIVE_THRESHOLD_PROVIDERS,
    ModelPrice,
    _cache_read_rate,
    _configured_price,
    _count,
    _first,
    _max_output_tokens,
    _optional_price,
    _price,
    _range_tiers,
    _tiers,
)
from spendgate.pricing.usage import UsageMetrics

if TYPE_CHECKING:
    from spendgate.config import BudgetConfig
    from spendgate.pricing.engine import PricingEngine


_import_lock = threading.Lock()
#: resolved prices kept per Pricing; past it the memo starts over
_CACHE_MAX_MODELS = 4096


def _load_model_cost() -> Mapping[str, Any]:
    """LiteLLM's live cost map, importing LiteLLM (offline) if nobody has yet."""
    module: Any = sys.modules.get("litellm")
    if module is None:
        with _import_lock:
            # Only the bundled map: an import must not reach for the network.
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            try:
                import litellm as module
            except ImportError as exc:
                raise ConfigurationError(
                    "pricing from LiteLLM's cost map needs litellm: "
                    "pip install 'spendgate[pricing]'"
                ) from exc
    model_cost: Mapping[str, Any] = module.model_cost
    return model_cost


class Pricing:
    """Exact costs of LLM calls, in the configured unit (LiteLLM's prices are USD).

    Usable on its own (``Pricing(BudgetConfig())``) or as ``budget.pricing``.
    LiteLLM is imported on the first lookup that needs it; call :meth:`load`
    at start-up to pay for that import (several seconds) before the first
    request instead of during it.

    :param config: supplies ``model_price_overrides`` and ``default_model_price``;
        ``None`` = neither
    :param model_cost: a cost map to use instead of LiteLLM's (tests, or an
        application that pins its own copy)
    :raise ConfigurationError: an override or the default price with unknown
        or missing fields
    """

    def __init__(
        self,
        config: BudgetConfig | None = None,
        *,
        model_cost: Mapping[str, Any] | None = None,
    ) -> None:
        overrides = config.model_price_overrides if config is not None else {}
        self._overrides = {
            model: _configured_price(model, prices, "override")
            for model, prices in overrides.items()
        }
        default = config.default_model_price if config is not None else None
        self._default = (
            None
            if default is None
            else _configured_price("<default>", default, "default")
        )
        self._model_cost = model_cost
        self._cache: dict[str, ModelPrice] = {}
        #: the active price book, first in the resolution (set by the manager
        #: each time it reads the active version; ``None``: no book)
        self.book: PricingEngine | None = None

    def _book_for(self, model: str) -> PricingEngine | None:
        """The active book when it prices ``model`` (by name or ``_default``)."""
        book = self.book
        if book is not None and (book.has_model(model) or book.has_default_model):
            return book
        return None

    def load(self) -> None:
        """Import LiteLLM and its cost map now (a no-op when already done)."""
        self._cost_map()

    def _cost_map(self) -> Mapping[str, Any]:
        if self._model_cost is None:
            return _load_model_cost()
        return self._model_cost

    # -- lookup --------------------------------------------------------------

    def price(self, model: str) -> ModelPrice:
        """The prices of ``model``: its override, else its cost-map entry, else
        the configured default.

        The cost map is searched the way LiteLLM's ``cost_per_token`` searches
        it: the name as given, then without its ``provider/`` prefix.

        :raise UnknownModelError: when none of the three prices it
        """
        if not isinstance(model, str):
            raise TypeError(f"model must be a str, not {type(model).__name__}")
        if not model:
            raise UnknownModelError(model, "empty model name")
        cached = self._cache.get(model)
        if cached is not None:
            return cached
        found = self._overrides.get(model) or self._from_cost_map(model)
        if found is None:
            if self._default is None:
                raise UnknownModelError(
                    model,
                    "not in model_price_overrides nor priced per token in LiteLLM's "
                    "cost map, and no default_model_price is configured",
                )
            found = ModelPrice(
                model=model,
                source="default",
                key=None,
                input_cost_per_token=self._default.input_cost_per_token,
                output_cost_per_token=self._default.output_cost_per_token,
                cache_read_input_token_cost=self._default.cache_read_input_token_cost,
                cache_creation_input_token_cost=self._default.cache_creation_input_token_cost,
                output_cost_per_reasoning_token=self._default.output_cost_per_reasoning_token,
            )
        if len(self._cache) >= _CACHE_MAX_MODELS:
            # Names come from callers (and any name gets the default price):
            # bound the memory they can take.
            self._cache.clear()
        self._cache[model] = found
        return found

    def _from_cost_map(self, model: str) -> ModelPrice | None:
        cost_map = self._cost_map()
        candidates = [model]
        if "/" in model:
            candidates.append(model.split("/", 1)[1])
        for key in candidates:
            entry = cost_map.get(key)
            if not isinstance(entry, Mapping):
                continue
            rate_in = entry.get("input_cost_per_token")
            rate_out = entry.get("output_cost_per_token")
            if rate_in is None and rate_out is None:
                # Priced per image, second or character, or not at all: not
                # something a per-token price can charge correctly.
                continue
            return ModelPrice(
                model=model,
                source="litellm",
                key=key,
                # LiteLLM reads an absent rate as 0 (embeddings have no output).
                input_cost_per_token=_price(
                    rate_in or 0, model, "input_cost_per_token"
                ),
                output_cost_per_token=_price(
                    rate_out or 0, model, "output_cost_per_token"
                ),
                cache_read_input_token_cost=_cache_read_rate(entry, model),
                cache_creation_input_token_cost=_optional_price(
                    entry, model, "cache_creation_input_token_cost"
                ),
                output_cost_per_reasoning_token=_optional_price(
                    entry, model, "output_cost_per_reasoning_token"
                ),
                tiers=_tiers(entry, model),
                range_tiers=_range_tiers(entry, model),
                has_off_peak_pricing=entry.get("off_peak_pricing") is not None,
                max_output_tokens=_max_output_tokens(entry),
                inclusive_threshold=entry.get("litellm_provider")
                in _INCLUSIVE_THRESHOLD_PROVIDERS,
            )
        return None

    # -- costs ---------------------------------------------------------------

    def calculate(
        self,
        model: str,
        input_tokens: int,
        output_tokens: int,
        *,
        cached_input_tokens: int = 0,
        cache_creation_input_tokens: int = 0,
        reasoning_tokens: int = 0,
    ) -> Decimal:
        """The exact cost of a call that used these tokens.

        Token counts follow OpenAI's (and LiteLLM's ``Usage``) convention: the
        cached and cache-write tokens are *part of* ``input_tokens``, and the
        reasoning tokens part of ``output_tokens``.

        :param cached_input_tokens: input tokens read from the provider's cache
        :param cache_creation_input_tokens: input tokens written to the cache
        :param reasoning_tokens: output tokens spent on reasoning
        :return: the exact cost, not rounded (a charge rounds it up to the
            micro-unit when it is recorded)
        :raise UnknownModelError: no price for ``model``
        :raise InvalidArgumentError: a negative count, or parts larger than their whole
        """
        input_tokens = _count("input_tokens", input_tokens)
        output_tokens = _count("output_tokens", output_tokens)
        cached = _count("cached_input_tokens", cached_input_tokens)
        written = _count("cache_creation_input_tokens", cache_creation_input_tokens)
        reasoning = _count("reasoning_tokens", reasoning_tokens)
        if cached + written > input_tokens:
            raise InvalidArgumentError(
                f"cached ({cached}) and cache-write ({written}) tokens exceed "
                f"input_tokens ({input_tokens})"
            )
        if reasoning > output_tokens:
            raise InvalidArgumentError(
                f"reasoning_tokens ({reasoning}) exceed output_tokens ({output_tokens})"
            )
        book = self._book_for(model)
        if book is not None:
            return book.calculate(
                UsageMetrics(
                    model=model,
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    cache_read_tokens=cached,
                    cache_write_tokens=written,
                )
            ).total
        price = self.price(model)
        rate_in, rate_out, rate_read, rate_write = price.rates_for(input_tokens)
        rate_reasoning = _first(price.output_cost_per_reasoning_token, rate_out)
        return (
            (input_tokens - cached - written) * rate_in
            + cached * rate_read
            + written * rate_write
            + (output_tokens - reasoning) * rate_out
            + reasoning * rate_reasoning
        )

    def calculate_cost(
        self, model: str, input_tokens: int, output_tokens: int
    ) -> Decimal:
        """:meth:`calculate` under coreason-budget's other name."""
        return self.calculate(model, input_tokens, output_tokens)

    def estimate(
        self, model: str, input_tokens: int, max_output_tokens: int
    ) -> Decimal:
        """The most a call can cost: what to reserve for it.

        Every input token at the dearest input rate (a cache write costs more
        than a plain read on some providers) and ``max_output_tokens`` at the
        dearest output rate (reasoning may be priced apart), at the tier the
        prompt size selects.

        :raise UnknownModelError: no price for ``model``
        """
        input_tokens = _count("input_tokens", input_tokens)
        max_output_tokens = _count("max_output_tokens", max_output_tokens)
        book = self._book_for(model)
        if book is not None:  # (a book's expression is its own worst case)
            return self.calculate(model, input_tokens, max_output_tokens)
        price = self.price(model)
        rate_in, rate_out, rate_read, rate_write = price.rates_for(input_tokens)
        rate_reasoning = _first(price.output_cost_per_reasoning_token, rate_out)
        dearest_in = max(rate_in, rate_read, rate_write)
        dearest_out = max(rate_out, rate_reasoning)
        return input_tokens * dearest_in + max_output_tokens * dearest_out
