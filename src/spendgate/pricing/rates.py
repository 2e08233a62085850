"""One model's prices as exact ``Decimal`` rates: :class:`ModelPrice`, read
from a configured override or from an entry of LiteLLM's cost map (its
long-context tiers and ``tiered_pricing`` tables included). How a price is
found for a model is :class:`spendgate.pricing.catalog.Pricing`'s.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from spendgate.core.money import to_decimal
from spendgate.errors import (
    ConfigurationError,
    InvalidAmountError,
    InvalidArgumentError,
    UnknownModelError,
)

#: price fields an override (or the default price) may carry
PRICE_FIELDS = (
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "output_cost_per_reasoning_token",
)
_REQUIRED_FIELDS = ("input_cost_per_token", "output_cost_per_token")

# "input_cost_per_token_above_200k_tokens" and friends; service-tier and batch
# variants ("..._tokens_priority") do not match, as in LiteLLM's standard path.
_TIER_KEY = re.compile(
    r"^(input_cost_per_token|output_cost_per_token|cache_read_input_token_cost"
    r"|cache_creation_input_token_cost)_above_(\d+)(k?)_tokens$"
)
# Providers whose higher tier starts *at* the threshold rather than above it
# (LiteLLM's _INCLUSIVE_THRESHOLD_PROVIDERS).
_INCLUSIVE_THRESHOLD_PROVIDERS = frozenset({"xai"})

# Fireworks bills a cached input token at half the input rate when the map
# names no cache price (LiteLLM's FIREWORKS_AI_DEFAULT_CACHE_READ_RATE_RATIO).
_DEFAULT_CACHE_READ_RATIO = {"fireworks_ai": Decimal("0.5")}

PriceSource = Literal["override", "litellm", "default"]


@dataclass(frozen=True, slots=True)
class PriceTier:
    """Rates that replace the base rates once a prompt passes ``threshold_tokens``."""

    threshold_tokens: int
    input_cost_per_token: Decimal | None
    output_cost_per_token: Decimal | None
    cache_read_input_token_cost: Decimal | None
    cache_creation_input_token_cost: Decimal | None


@dataclass(frozen=True, slots=True)
class RangeTier:
    """One row of a ``tiered_pricing`` table: every token of a request whose
    input size falls in ``(start, end]`` is billed at this row's rates."""

    start: Decimal
    end: Decimal
    input_cost_per_token: Decimal
    #: ``None``: the model's own output rate
    output_cost_per_token: Decimal | None
    #: ``None``: this row's input rate
    cache_read_input_token_cost: Decimal | None
    cache_creation_input_token_cost: Decimal | None


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """The per-token prices of one model, exact."""

    #: the name asked for
    model: str
    #: where the price came from
    source: PriceSource
    #: the cost-map key it resolved to (``None`` for overrides and the default)
    key: str | None
    input_cost_per_token: Decimal
    output_cost_per_token: Decimal
    #: ``None``: cached input is billed as ordinary input
    cache_read_input_token_cost: Decimal | None = None
    #: ``None``: cache writes are billed as ordinary input
    cache_creation_input_token_cost: Decimal | None = None
    #: ``None``: reasoning tokens are billed as ordinary output
    output_cost_per_reasoning_token: Decimal | None = None
    #: long-context tiers, lowest threshold first
    tiers: tuple[PriceTier, ...] = ()
    #: the higher tier starts at the threshold (xAI), not above it
    inclusive_threshold: bool = False
    #: a ``tiered_pricing`` table, by ``start``; it replaces every other rate
    range_tiers: tuple[RangeTier, ...] = ()
    #: the cost map also names off-peak rates, which are not applied: the
    #: standard (higher) rate is charged at every hour
    has_off_peak_pricing: bool = False
    #: the most output tokens one call can produce, from the cost map
    max_output_tokens: int | None = None

    def rates_for(self, input_tokens: int) -> tuple[Decimal, Decimal, Decimal, Decimal]:
        """``(input, output, cache_read, cache_creation)`` rates for a prompt size.

        A prompt past a tier's threshold is billed entirely at that tier, as
        LiteLLM does; a rate the tier does not name stays at the base rate.
        """
        ranged = self._range_tier(input_tokens)
        if ranged is not None:
            rate_in = ranged.input_cost_per_token
            return (
                rate_in,
                _first(ranged.output_cost_per_token, self.output_cost_per_token),
                _first(ranged.cache_read_input_token_cost, rate_in),
                _first(ranged.cache_creation_input_token_cost, rate_in),
            )
        rate_in = self.input_cost_per_token
        rate_out = self.output_cost_per_token
        rate_read = self.cache_read_input_token_cost
        rate_write = self.cache_creation_input_token_cost
        for tier in self.tiers:
            passed = input_tokens > tier.threshold_tokens or (
                self.inclusive_threshold and input_tokens == tier.threshold_tokens
            )
            if not passed:
                continue
            rate_in = _first(tier.input_cost_per_token, rate_in)
            rate_out = _first(tier.output_cost_per_token, rate_out)
            rate_read = _optional(tier.cache_read_input_token_cost, rate_read)
            rate_write = _optional(tier.cache_creation_input_token_cost, rate_write)
        # A provider that publishes no cache price bills cached tokens as input.
        return (
            rate_in,
            rate_out,
            rate_in if rate_read is None else rate_read,
            rate_in if rate_write is None else rate_write,
        )

    def _range_tier(self, input_tokens: int) -> RangeTier | None:
        # LiteLLM's select_tier_for_input: start < tokens <= end, and a request
        # past the last row is billed at the last (dearest) row.
        if not self.range_tiers or input_tokens <= 0:
            return None
        for tier in self.range_tiers:
            if tier.start < input_tokens <= tier.end:
                return tier
        return self.range_tiers[-1]


def _first(value: Decimal | None, fallback: Decimal) -> Decimal:
    # An explicit 0 is a real price, so "or" will not do.
    return fallback if value is None else value


def _optional(value: Decimal | None, fallback: Decimal | None) -> Decimal | None:
    return fallback if value is None else value


def _price(value: object, model: str, field: str) -> Decimal:
    try:
        return to_decimal(value)
    except InvalidAmountError as exc:
        raise UnknownModelError(model, f"invalid {field}: {exc.reason}") from None


def _optional_price(entry: Mapping[str, Any], model: str, field: str) -> Decimal | None:
    value = entry.get(field)
    return None if value is None else _price(value, model, field)


def _configured_price(
    model: str, prices: Mapping[str, Decimal], source: PriceSource
) -> ModelPrice:
    unknown = sorted(set(prices) - set(PRICE_FIELDS))
    if unknown:
        raise ConfigurationError(
            f"price of {model!r}: unknown field(s) {', '.join(unknown)}; "
            f"expected some of {', '.join(PRICE_FIELDS)}"
        )
    missing = [f for f in _REQUIRED_FIELDS if f not in prices]
    if missing:
        raise ConfigurationError(f"price of {model!r}: missing {', '.join(missing)}")
    return ModelPrice(
        model=model,
        source=source,
        key=None,
        input_cost_per_token=prices["input_cost_per_token"],
        output_cost_per_token=prices["output_cost_per_token"],
        cache_read_input_token_cost=prices.get("cache_read_input_token_cost"),
        cache_creation_input_token_cost=prices.get("cache_creation_input_token_cost"),
        output_cost_per_reasoning_token=prices.get("output_cost_per_reasoning_token"),
    )


def _tiers(entry: Mapping[str, Any], model: str) -> tuple[PriceTier, ...]:
    found: dict[int, dict[str, Decimal]] = {}
    for field, value in entry.items():
        match = _TIER_KEY.match(field)
        if match is None or value is None:
            continue
        base, number, kilo = match.groups()
        threshold = int(number) * (1000 if kilo else 1)
        found.setdefault(threshold, {})[base] = _price(value, model, field)
    return tuple(
        PriceTier(
            threshold_tokens=threshold,
            input_cost_per_token=rates.get("input_cost_per_token"),
            output_cost_per_token=rates.get("output_cost_per_token"),
            cache_read_input_token_cost=rates.get("cache_read_input_token_cost"),
            cache_creation_input_token_cost=rates.get(
                "cache_creation_input_token_cost"
            ),
        )
        for threshold, rates in sorted(found.items())
    )


def _max_output_tokens(entry: Mapping[str, Any]) -> int | None:
    for field in ("max_output_tokens", "max_tokens"):
        value = entry.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _cache_read_rate(entry: Mapping[str, Any], model: str) -> Decimal | None:
    rate = _optional_price(entry, model, "cache_read_input_token_cost")
    ratio = _DEFAULT_CACHE_READ_RATIO.get(str(entry.get("litellm_provider")))
    if rate is None and ratio is not None and entry.get("input_cost_per_token"):
        rate = (
            _price(entry["input_cost_per_token"], model, "input_cost_per_token") * ratio
        )
    return rate


def _range_tiers(entry: Mapping[str, Any], model: str) -> tuple[RangeTier, ...]:
    table = entry.get("tiered_pricing")
    if not isinstance(table, list):
        return ()
    rows: list[RangeTier] = []
    for row in table:
        if not isinstance(row, Mapping) or row.get("input_cost_per_token") is None:
            continue
        bounds = row.get("range")
        if not isinstance(bounds, list | tuple) or len(bounds) != 2:
            continue
        rows.append(
            RangeTier(
                start=_price(bounds[0], model, "tiered_pricing range"),
                end=_price(bounds[1], model, "tiered_pricing range"),
                input_cost_per_token=_price(
                    row["input_cost_per_token"], model, "tiered_pricing"
                ),
                output_cost_per_token=_optional_price(
                    row, model, "output_cost_per_token"
                ),
                cache_read_input_token_cost=_optional_price(
                    row, model, "cache_read_input_token_cost"
                ),
                cache_creation_input_token_cost=_optional_price(
                    row, model, "cache_creation_input_token_cost"
                ),
            )
        )
    return tuple(sorted(rows, key=lambda row: row.start))


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise InvalidArgumentError(f"{name} must not be negative, not {value}")
    return value
