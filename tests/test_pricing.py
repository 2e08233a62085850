"""Pricing: exact ``Decimal`` costs that agree with LiteLLM's own.

How: the formula is checked on small hand-written cost maps (tiers, tables,
cache and reasoning rates, explicit zeros) where every expected value is
exact; agreement with LiteLLM is checked by calling its ``cost_per_token`` on
a deterministic sample of the bundled cost map and requiring LiteLLM's float
to equal ``float(ours)`` within float noise (``rel_tol=1e-12``: see the
module docstring of ``spendgate.pricing.catalog`` for why that, and not rounding
both, is what "agree" means), with every network connection blocked. Lazy,
offline import is checked in a fresh interpreter.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from spendgate import (
    BudgetConfig,
    BudgetManager,
    ConfigurationError,
    InvalidArgumentError,
    SpendgateError,
    UnknownModelError,
)
from spendgate.pricing import Pricing

# LiteLLM builds some pydantic models lazily; their warnings are LiteLLM's.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Items? .* using the `ReadOnly` qualifier:UserWarning"
)

D = Decimal


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


# -- against LiteLLM itself ----------------------------------------------------


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Every connection attempt away from this machine fails and is recorded."""
    attempts: list[object] = []
    real_connect = socket.socket.connect

    def guarded_connect(self: socket.socket, address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "::1", "localhost"):
            attempts.append(address)
            raise OSError("network blocked in tests")
        real_connect(self, address)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        attempts.append(host)
        raise socket.gaierror("network blocked in tests")

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    yield attempts


# Providers whose LiteLLM cost path logs in first (device-code auth, a local
# server): they would try the network, so they are left out of the sample.
_NETWORKED_PROVIDERS = {"github_copilot", "lemonade"}


def _sample(model_cost: dict[str, Any], size: int) -> list[str]:
    eligible = sorted(
        key
        for key, entry in model_cost.items()
        if isinstance(entry, dict)
        and entry.get("mode") == "chat"
        and entry.get("input_cost_per_token") is not None
        and entry.get("output_cost_per_token") is not None
        # Off-peak discounts depend on the hour; spendgate charges the
        # standard rate (see test_off_peak_models_are_charged_the_standard_rate).
        and entry.get("off_peak_pricing") is None
        and entry.get("litellm_provider") not in _NETWORKED_PROVIDERS
    )
    step = max(1, len(eligible) // size)
    return eligible[::step]


@pytest.mark.slow
def test_agrees_with_litellm_cost_per_token_over_a_sample(
    no_network: list[object],
) -> None:
    import litellm
    from litellm.types.utils import PromptTokensDetailsWrapper, Usage

    pricing = Pricing()
    models = _sample(litellm.model_cost, 400)
    compared = 0
    disagreements = []
    # plain; past the common long-context thresholds (200k, 272k); cached input
    cases = [(1234, 567, 0), (272_001, 100, 0), (1000, 300, 400)]
    for model in models:
        for prompt, completion, cached in cases:
            ours = pricing.calculate(
                model, prompt, completion, cached_input_tokens=cached
            )
            usage = Usage(
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=prompt + completion,
                prompt_tokens_details=PromptTokensDetailsWrapper(cached_tokens=cached),
            )
            try:
                input_cost, output_cost = litellm.cost_per_token(
                    model=model,
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    usage_object=usage,
                )
            except Exception:
                # LiteLLM cannot price this key itself (e.g. no provider it
                # recognises in the name): there is nothing to agree with.
                continue
            compared += 1
            theirs = input_cost + output_cost
            if not math.isclose(float(ours), theirs, rel_tol=1e-12, abs_tol=1e-18):
                disagreements.append((model, prompt, completion, cached, ours, theirs))
    assert no_network == []
    assert compared >= 600
    assert disagreements == []


def test_gpt_4o_matches_litellm_to_the_last_digit() -> None:
    import litellm

    ours = Pricing().calculate("gpt-4o", 1000, 500)
    assert ours == D("0.0075")  # 1000 * 2.5e-06 + 500 * 1e-05
    input_cost, output_cost = litellm.cost_per_token(
        model="gpt-4o", prompt_tokens=1000, completion_tokens=500
    )
    assert math.isclose(float(ours), input_cost + output_cost, rel_tol=1e-12)


def test_off_peak_models_are_charged_the_standard_rate() -> None:
    import litellm

    off_peak = sorted(
        key
        for key, entry in litellm.model_cost.items()
        if isinstance(entry, dict)
        and entry.get("off_peak_pricing") is not None
        and entry.get("input_cost_per_token") is not None
    )
    pricing = Pricing()
    checked = 0
    for model in off_peak:
        try:
            input_cost, output_cost = litellm.cost_per_token(
                model=model, prompt_tokens=1000, completion_tokens=1000
            )
        except Exception:
            continue  # LiteLLM cannot price this key by itself
        price = pricing.price(model)
        assert price.has_off_peak_pricing
        entry = litellm.model_cost[model]
        assert price.input_cost_per_token == D(repr(entry["input_cost_per_token"]))
        # Never below what LiteLLM charges, at any hour.
        ours = pricing.calculate(model, 1000, 1000)
        assert float(ours) >= input_cost + output_cost
        checked += 1
    if not checked:
        pytest.skip("this LiteLLM's cost map has no off-peak prices it can apply")


# -- lazy and offline -----------------------------------------------------------


def test_import_is_lazy_and_the_cost_map_is_the_bundled_one() -> None:
    script = """
import os, sys
from decimal import Decimal
import spendgate
heavy = [m for m in ("litellm", "fastapi", "starlette", "asyncpg") if m in sys.modules]
assert heavy == [], heavy
import spendgate.integrations.asgi  # pure ASGI: no framework import either
heavy = [m for m in ("litellm", "fastapi", "starlette", "asyncpg") if m in sys.modules]
assert heavy == [], heavy
from spendgate.pricing import Pricing
pricing = Pricing()
assert "litellm" not in sys.modules
cost = pricing.calculate("gpt-4o", 1000, 500)
assert cost == Decimal("0.0075"), cost
assert os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
from litellm.litellm_core_utils.get_model_cost_map import get_model_cost_map_source_info
info = get_model_cost_map_source_info()
assert info["source"] == "local", info
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LITELLM_")}
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")
