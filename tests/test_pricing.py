"""Pricing: exact ``Decimal`` costs from LiteLLM-format cost maps.

How: the formula is checked on small hand-written cost maps (tiers, tables,
cache and reasoning rates, explicit zeros) where every expected value is
exact; then price overrides, the default price (from the config or the
environment) and the errors: an unknown model, a malformed override, bad
token counts. Agreement with LiteLLM itself, offline, and the lazy import
are tests/test_pricing_litellm.py's.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from conftest import LITELLM_WARNINGS
from pricing_helpers import D
from spendgate import (
    BudgetConfig,
    BudgetManager,
    ConfigurationError,
    InvalidArgumentError,
    SpendgateError,
    UnknownModelError,
)
from spendgate.pricing import Pricing

pytestmark = LITELLM_WARNINGS


def cost_map(**entries: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(entries)


# -- the formula, on hand-written maps ---------------------------------------


def test_plain_per_token_price_is_exact() -> None:
    pricing = Pricing(
        model_cost=cost_map(
            m={"input_cost_per_token": 1e-07, "output_cost_per_token": 3e-07}
        )
    )
    cost = pricing.calculate("m", 3, 3)
    # 0.1 + 0.2 style: floats would give 1.2000000000000002e-06
    assert cost == D("0.0000012")
    assert isinstance(cost, Decimal)
    assert pricing.price("m").source == "litellm"
    assert pricing.calculate("m", 0, 0) == 0


def test_cache_reads_writes_and_reasoning_have_their_own_rates() -> None:
    pricing = Pricing(
        model_cost=cost_map(
            m={
                "input_cost_per_token": 3e-06,
                "output_cost_per_token": 1.5e-05,
                "cache_read_input_token_cost": 3e-07,
                "cache_creation_input_token_cost": 3.75e-06,
                "output_cost_per_reasoning_token": 2e-05,
            }
        )
    )
    cost = pricing.calculate(
        "m",
        1000,
        500,
        cached_input_tokens=200,
        cache_creation_input_tokens=100,
        reasoning_tokens=50,
    )
    assert cost == (
        700 * D("0.000003")
        + 200 * D("0.0000003")
        + 100 * D("0.00000375")
        + 450 * D("0.000015")
        + 50 * D("0.00002")
    )


def test_missing_cache_rates_bill_as_input_and_fireworks_halves_reads() -> None:
    pricing = Pricing(
        model_cost=cost_map(
            plain={"input_cost_per_token": 2e-06, "output_cost_per_token": 0},
            fw={
                "input_cost_per_token": 2e-06,
                "output_cost_per_token": 0,
                "litellm_provider": "fireworks_ai",
            },
        )
    )
    assert pricing.calculate("plain", 100, 0, cached_input_tokens=100) == D("0.0002")
    assert pricing.calculate("fw", 100, 0, cached_input_tokens=100) == D("0.0001")


def test_long_context_tier_applies_to_the_whole_prompt_above_its_threshold() -> None:
    entry = {
        "input_cost_per_token": 1e-06,
        "output_cost_per_token": 2e-06,
        "input_cost_per_token_above_200k_tokens": 2e-06,
        "output_cost_per_token_above_200k_tokens": 4e-06,
        "cache_read_input_token_cost_above_200k_tokens": 0.0,
        # service-tier variants are not standard tiers and are ignored
        "input_cost_per_token_above_200k_tokens_priority": 9.0,
    }
    xai = {**entry, "litellm_provider": "xai"}
    pricing = Pricing(model_cost=cost_map(m=entry, x=xai))
    assert pricing.calculate("m", 200_000, 10) == 200_000 * D("0.000001") + 10 * D(
        "0.000002"
    )
    assert pricing.calculate("m", 200_001, 10) == 200_001 * D("0.000002") + 10 * D(
        "0.000004"
    )
    # An explicit 0.0 in a tier is a real (free) price, not "absent".
    assert pricing.calculate("m", 200_001, 0, cached_input_tokens=1) == 200_000 * D(
        "0.000002"
    )
    # xAI bills the higher tier from the threshold itself.
    assert pricing.calculate("x", 200_000, 0) == 200_000 * D("0.000002")


def test_tiered_pricing_table_picks_one_row_for_every_token() -> None:
    entry = {
        "input_cost_per_token": 1e-07,
        "output_cost_per_token": 5e-07,
        "tiered_pricing": [
            {"range": [100000, 1000000], "input_cost_per_token": 5e-07},
            {
                "range": [0, 100000],
                "input_cost_per_token": 1e-07,
                "output_cost_per_token": 5e-07,
                "cache_read_input_token_cost": 1e-08,
            },
        ],
    }
    pricing = Pricing(model_cost=cost_map(t=entry))
    assert pricing.calculate("t", 100_000, 10, cached_input_tokens=10) == (
        99_990 * D("1E-7") + 10 * D("1E-8") + 10 * D("5E-7")
    )
    # Second row: no output rate (the model's stands in), no cache rate (its input).
    assert pricing.calculate("t", 100_001, 10, cached_input_tokens=1) == (
        100_001 * D("5E-7") + 10 * D("5E-7")
    )
    # Past the last range: the last (dearest) row.
    assert pricing.calculate("t", 2_000_000, 0) == 2_000_000 * D("5E-7")


def test_estimate_is_the_worst_case_of_any_split() -> None:
    pricing = Pricing(
        model_cost=cost_map(
            m={
                "input_cost_per_token": 3e-06,
                "output_cost_per_token": 1.5e-05,
                "cache_read_input_token_cost": 3e-07,
                "cache_creation_input_token_cost": 3.75e-06,
                "output_cost_per_reasoning_token": 2e-05,
                "max_output_tokens": 64000,
            }
        )
    )
    worst = pricing.estimate("m", 1000, 500)
    assert worst == 1000 * D("0.00000375") + 500 * D("0.00002")
    for cached, written, reasoning in [(0, 0, 0), (0, 1000, 500), (900, 100, 0)]:
        actual = pricing.calculate(
            "m",
            1000,
            500,
            cached_input_tokens=cached,
            cache_creation_input_tokens=written,
            reasoning_tokens=reasoning,
        )
        assert actual <= worst
    assert pricing.price("m").max_output_tokens == 64000


def test_provider_prefix_is_stripped_like_litellm_does() -> None:
    pricing = Pricing(
        model_cost=cost_map(
            m={"input_cost_per_token": 1e-06, "output_cost_per_token": 0}
        )
    )
    assert pricing.calculate("someprovider/m", 10, 0) == D("0.00001")


# -- overrides, defaults, errors -------------------------------------------


def test_overrides_take_precedence_in_coreasons_format() -> None:
    config = BudgetConfig(
        model_price_overrides={
            "gpt-4o": {"input_cost_per_token": 0.1, "output_cost_per_token": "0.2"},
            "in-house": {
                "input_cost_per_token": "0.000001",
                "output_cost_per_token": 0,
            },
        }
    )
    pricing = Pricing(config)
    assert pricing.calculate("gpt-4o", 1, 1) == D(
        "0.3"
    )  # exact, not 0.30000000000000004
    assert pricing.price("gpt-4o").source == "override"
    assert pricing.calculate("in-house", 7, 100) == D("0.000007")


def test_unknown_model_raises_a_typed_error_naming_it() -> None:
    pricing = Pricing(model_cost=cost_map())
    with pytest.raises(UnknownModelError, match="no-such-model") as raised:
        pricing.calculate("no-such-model", 1, 1)
    assert isinstance(raised.value, LookupError)
    assert isinstance(raised.value, ValueError)
    assert isinstance(raised.value, SpendgateError)
    assert raised.value.model == "no-such-model"
    # Priced per image only: not something a per-token price can charge.
    images = Pricing(model_cost=cost_map(img={"output_cost_per_image": 0.04}))
    with pytest.raises(UnknownModelError):
        images.estimate("img", 1, 1)


def test_default_price_covers_unknown_models_only() -> None:
    config = BudgetConfig(
        default_model_price={
            "input_cost_per_token": "0.00001",
            "output_cost_per_token": "0.00003",
        }
    )
    pricing = Pricing(
        config,
        model_cost=cost_map(
            m={"input_cost_per_token": 1e-06, "output_cost_per_token": 0}
        ),
    )
    assert pricing.calculate("whatever", 10, 10) == D("0.0004")
    assert pricing.price("whatever").source == "default"
    assert pricing.calculate("m", 10, 10) == D("0.00001")


def test_default_price_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "SPENDGATE_DEFAULT_MODEL_PRICE",
        '{"input_cost_per_token": "0.000002", "output_cost_per_token": "0.000004"}',
    )
    pricing = Pricing(BudgetConfig(), model_cost=cost_map())
    assert pricing.calculate("anything", 1, 1) == D("0.000006")


@pytest.mark.parametrize(
    "prices",
    [
        {"input_cost_per_token": 1},  # no output price
        {"input_cost_per_token": 1, "output_cost_per_token": 1, "inptu_cost": 1},
    ],
)
def test_malformed_override_is_a_configuration_error(prices: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        Pricing(BudgetConfig(model_price_overrides={"m": prices}))


def test_bad_token_counts_are_rejected() -> None:
    pricing = Pricing(
        model_cost=cost_map(
            m={"input_cost_per_token": 1e-06, "output_cost_per_token": 0}
        )
    )
    with pytest.raises(InvalidArgumentError):
        pricing.calculate("m", -1, 0)
    with pytest.raises(InvalidArgumentError):
        pricing.calculate("m", 10, 0, cached_input_tokens=11)
    with pytest.raises(InvalidArgumentError):
        pricing.calculate("m", 10, 5, reasoning_tokens=6)
    with pytest.raises(TypeError):
        pricing.calculate("m", True, 0)
    with pytest.raises(TypeError):
        pricing.calculate("m", 1.5, 0)  # type: ignore[arg-type]


def test_budget_pricing_is_one_lazy_instance_with_the_budgets_config() -> None:
    budget = BudgetManager(
        BudgetConfig(
            model_price_overrides={
                "house": {"input_cost_per_token": "0.5", "output_cost_per_token": "1"}
            }
        )
    )
    assert budget.pricing is budget.pricing
    assert budget.pricing.calculate("house", 2, 1) == D("2")
