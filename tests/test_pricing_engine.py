"""The price book engine: bursar's books load unchanged and price exactly.

How: the configurations of bursar's README (the quick start, "Basic
config", "With plans", the `pricing set` example) and DESIGN.md's are
loaded as JSON text, as YAML text and as data, and priced against values
worked out by hand from bursar's rules (per-tool counts, search and cache
sections, the zero clamp, plan rate overrides, the model default);
evaluation faults and an unknown fixed job are refused, prices stay exact
``Decimal``s and the config loads back to the same book. What does not
load, hostile documents and ``from_file`` are in
tests/test_pricing_engine_loading.py; ``UsageMetrics``, ``ToolCall`` and
``CostBreakdown`` in tests/test_pricing_engine_types.py (the shared books:
tests/pricing_helpers.py).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from pricing_helpers import BASIC_JSON, BASIC_YAML, DESIGN, D, usage
from spendgate.errors import (
    ExpressionError,
    InvalidArgumentError,
    UnknownModelError,
)
from spendgate.pricing import (
    PricingEngine,
    ToolCall,
)

QUICK_START = {
    "version": 1,
    "models": {"_default": "input_tokens * 0.001 + output_tokens * 0.003"},
}

# bursar's README, "With plans", verbatim
PLANS_JSON = """
{
  "version": 1,
  "models": { "_default": "input_tokens * 0.01 + output_tokens * 0.03" },
  "plans": {
    "free": {
      "id": "free",
      "name": "Free Tier",
      "free_allowance": 50000,
      "rate_overrides": { "_default": "input_tokens * 0.02 + output_tokens * 0.06" },
      "features": { "max_concurrency": 1, "background_removal": true },
      "feature_limits": {
        "background_removal": { "max_calls": 5, "period": "monthly", "action": "deny" }
      }
    },
    "pro": {
      "id": "pro",
      "name": "Pro Plan",
      "free_allowance": 500000
    }
  }
}
"""

# bursar's README, `bursar pricing set -` example
PRICING_SET_JSON = """
{
  "version": 1,
  "models": { "_default": "input_tokens * 0.01 + output_tokens * 0.03" },
  "plans": {
    "free": { "id": "free", "name": "Free Tier", "free_allowance": 50000 },
    "pro": { "id": "pro", "name": "Pro", "free_allowance": 500000 }
  }
}
"""


# -- bursar's README books ----------------------------------------------------


def test_the_quick_start_prices_500_and_200_tokens_at_exactly_1_1() -> None:
    engine = PricingEngine.from_dict(QUICK_START)
    result = engine.calculate(usage(model="gpt-4", input_tokens=500, output_tokens=200))
    assert result.total == D("1.1")
    assert result.model == D("1.1")
    assert (result.tools, result.search, result.cache, result.fixed) == (0, 0, 0, 0)
    assert engine.min_balance is None


@pytest.mark.parametrize(
    "load",
    [
        lambda: PricingEngine.from_json(BASIC_JSON),
        lambda: PricingEngine.from_json(BASIC_JSON.encode()),
        lambda: PricingEngine.from_yaml(BASIC_YAML),
        lambda: PricingEngine.from_yaml(yaml.safe_dump(json.loads(BASIC_JSON))),
        lambda: PricingEngine.from_dict(json.loads(BASIC_JSON)),
    ],
    ids=["json", "json-bytes", "yaml", "yaml-dumped", "dict"],
)
def test_the_basic_config_loads_unchanged_and_prices_each_section(load: Any) -> None:
    engine = load()
    assert engine.config == json.loads(BASIC_JSON)
    assert engine.min_balance == 5
    assert engine.has_model("gpt-4") and not engine.has_model("gpt-5")
    # gpt-4's own expression: 500 * 0.01 + 200 * 0.03
    gpt4 = engine.calculate(usage(model="gpt-4", input_tokens=500, output_tokens=200))
    assert gpt4.total == gpt4.model == D(11)
    # any other model: _default
    other = engine.calculate(usage(model="claude", input_tokens=500, output_tokens=200))
    assert other.total == D("1.1")
    # search, cache and a free tool, all at once
    full = engine.calculate(
        usage(
            model="gpt-4",
            input_tokens=500,
            output_tokens=200,
            search_queries=2,
            search_results=10,
            cache_read_tokens=100,
            tool_calls=[ToolCall("web_search"), ToolCall("code")],
        )
    )
    assert full.search == D("1.5")  # 2 * 0.5 + 10 * 0.05
    assert full.cache == D("-0.45")  # -100 * 0.0045
    assert full.tools == 0
    assert dict(full.tools_by_name) == {"_default": 0}
    assert full.total == D("12.05")
    fixed = engine.calculate_fixed("batch_job")
    assert fixed.total == fixed.fixed == 20
    assert fixed.model == fixed.tools == fixed.search == fixed.cache == 0


def test_the_with_plans_config_loads_and_its_rate_overrides_price_the_plan() -> None:
    engine = PricingEngine.from_json(PLANS_JSON)
    assert set(engine.plans) == {"free", "pro"}
    free = engine.plans["free"]
    assert free["name"] == "Free Tier"
    assert free["free_allowance"] == 50000
    assert free["features"] == {"max_concurrency": 1, "background_removal": True}
    assert free["feature_limits"]["background_removal"] == {
        "max_calls": 5,
        "period": "monthly",
        "action": "deny",
    }
    with pytest.raises(TypeError):
        free["features"]["max_concurrency"] = 99  # type: ignore[index]
    call = usage(model="gpt-4", input_tokens=500, output_tokens=200)
    assert engine.calculate(call).total == D(11)  # 500 * 0.01 + 200 * 0.03
    overrides = engine.rate_overrides("free")
    assert set(overrides) == {"_default"}
    assert engine.calculate(call, rate_overrides=overrides).total == D(22)
    assert engine.rate_overrides("pro") == {}
    assert engine.rate_overrides("no-such-plan") == {}
    assert PricingEngine.from_yaml(yaml.safe_dump(json.loads(PLANS_JSON))).config == (
        engine.config
    )


def test_the_pricing_set_example_loads() -> None:
    engine = PricingEngine.from_json(PRICING_SET_JSON)
    assert engine.plans["pro"]["free_allowance"] == 500000
    assert engine.config == json.loads(PRICING_SET_JSON)


def test_designs_example_prices_every_dimension() -> None:
    engine = PricingEngine.from_dict(DESIGN)
    result = engine.calculate(
        usage(
            model="gpt-4o",
            input_tokens=500,
            output_tokens=200,
            tool_calls=[ToolCall(name="web_search")],
            search_queries=1,
            search_results=4,
            cache_read_tokens=1000,
        )
    )
    assert result.model == D("0.00325")  # 500 * 0.0000025 + 200 * 0.00001
    assert result.tools == D("0.01")
    assert result.search == D("0.007")  # 0.005 + 4 * 0.0005
    assert result.cache == D("-0.0012")
    assert result.total == D("0.01905")
    assert result.fixed == 0


# -- bursar's pricing rules -------------------------------------------------


def test_tools_are_priced_per_name_with_this_tool_calls_and_the_rest_by_default() -> (
    None
):
    # bursar's documentation: 2 code_exec calls and 3 calls to other tools
    engine = PricingEngine.from_yaml(
        """
models: {_default: input_tokens * 0}
tools:
  code_exec: "this_tool_calls * 10 / 1000"
  _default: "this_tool_calls * 5 / 1000"
"""
    )
    calls = [ToolCall("code_exec")] * 2 + [ToolCall("a"), ToolCall("b"), ToolCall("a")]
    result = engine.calculate(usage(tool_calls=calls))
    assert dict(result.tools_by_name) == {
        "code_exec": D("0.02"),
        "_default": D("0.015"),
    }
    assert result.tools == result.total == D("0.035")


def test_tool_calls_is_the_count_of_all_calls_in_a_tool_expression_too() -> None:
    engine = PricingEngine.from_dict(
        {"models": {"_default": "0"}, "tools": {"web_search": "tool_calls * 0.01"}}
    )
    calls = [ToolCall("web_search"), ToolCall("other"), ToolCall("other")]
    result = engine.calculate(usage(tool_calls=calls))
    assert result.tools_by_name == {"web_search": D("0.03")}


def test_a_tool_expression_is_evaluated_only_for_calls_it_prices() -> None:
    engine = PricingEngine.from_dict(
        {
            "models": {"_default": "0"},
            "tools": {"web_search": "1 + this_tool_calls", "_default": "7"},
        }
    )
    assert engine.calculate(usage()).total == 0
    only_named = engine.calculate(usage(tool_calls=[ToolCall("web_search")]))
    assert only_named.tools_by_name == {"web_search": D(2)}
    no_tools_section = PricingEngine.from_dict(QUICK_START)
    free = no_tools_section.calculate(usage(tool_calls=[ToolCall("x")]))
    assert free.tools == 0 and free.tools_by_name == {}


def test_search_and_cache_may_be_the_expression_itself_as_bursars_code_takes_it() -> (
    None
):
    engine = PricingEngine.from_dict(
        {
            "models": {"_default": "0"},
            "search": "search_queries * 0.1",
            "cache": "-cache_read_tokens * 0.001",
        }
    )
    result = engine.calculate(usage(search_queries=3, cache_read_tokens=100))
    assert (result.search, result.cache) == (D("0.3"), D("-0.1"))
    assert result.total == D("0.2")


def test_a_discount_larger_than_the_charge_makes_it_free_never_a_credit() -> None:
    engine = PricingEngine.from_json(BASIC_JSON)
    result = engine.calculate(
        usage(model="gpt-4", input_tokens=10, cache_read_tokens=1_000_000)
    )
    assert result.cache == D(-4500)
    assert result.model == D("0.1")
    assert result.total == 0


def test_model_none_is_priced_by_default_and_an_unknown_model_without_one_fails() -> (
    None
):
    engine = PricingEngine.from_dict(QUICK_START)
    assert engine.calculate(usage(input_tokens=1000)).total == 1
    assert engine.has_default_model and not engine.has_model("_default")
    strict = PricingEngine.from_dict({"models": {"gpt-4": "input_tokens * 2"}})
    assert strict.calculate(usage(model="gpt-4", input_tokens=1)).total == 2
    with pytest.raises(UnknownModelError, match="gpt-5"):
        strict.calculate(usage(model="gpt-5", input_tokens=1))
    with pytest.raises(UnknownModelError):
        strict.calculate(usage(input_tokens=1))


def test_rate_overrides_come_first_the_model_then_their_default() -> None:
    engine = PricingEngine.from_dict(
        {
            "models": {"a": "1", "_default": "2"},
            "plans": {
                "p": {"id": "p", "name": "P", "rate_overrides": {"b": "30"}},
                "q": {"id": "q", "name": "Q", "rate_overrides": {"_default": "40"}},
            },
        }
    )
    p, q = engine.rate_overrides("p"), engine.rate_overrides("q")
    price = {
        (model, plan): engine.calculate(usage(model=model), rate_overrides=rates).total
        for model in ("a", "b", "c")
        for plan, rates in (("none", None), ("p", p), ("q", q))
    }
    assert price == {
        ("a", "none"): 1,
        ("b", "none"): 2,
        ("c", "none"): 2,
        ("a", "p"): 1,
        ("b", "p"): 30,
        ("c", "p"): 2,
        ("a", "q"): 40,
        ("b", "q"): 40,
        ("c", "q"): 40,
    }


def test_evaluation_faults_and_an_oversized_total_are_expression_errors() -> None:
    engine = PricingEngine.from_dict(
        {"models": {"_default": "input_tokens / output_tokens"}}
    )
    with pytest.raises(ExpressionError, match="division by zero") as caught:
        engine.calculate(usage(input_tokens=1))
    assert caught.value.expression == "input_tokens / output_tokens"
    large = PricingEngine.from_dict(
        {"models": {"_default": "1e9"}, "search": "1e9", "cache": "0"}
    )
    with pytest.raises(ExpressionError, match="above the largest charge"):
        large.calculate(usage())


def test_an_unknown_fixed_job_is_refused_not_free() -> None:
    engine = PricingEngine.from_json(BASIC_JSON)
    with pytest.raises(InvalidArgumentError, match="no fixed price for 'nightly'"):
        engine.calculate_fixed("nightly")


def test_prices_are_exact_decimals_whatever_the_input_format() -> None:
    for engine in (
        PricingEngine.from_dict({"models": {"_default": "0"}, "fixed": {"j": 0.1}}),
        PricingEngine.from_json('{"models": {"_default": "0"}, "fixed": {"j": 0.1}}'),
        PricingEngine.from_yaml("models: {_default: '0'}\nfixed: {j: 0.1}"),
        PricingEngine.from_dict({"models": {"_default": "0"}, "fixed": {"j": "0.1"}}),
    ):
        assert engine.calculate_fixed("j").total == D("0.1")
        assert str(engine.calculate_fixed("j").total) == "0.1"
        assert engine.config["fixed"] == {"j": "0.1"}


def test_the_config_is_json_and_loads_back_to_the_same_book() -> None:
    engine = PricingEngine.from_dict(
        {**DESIGN, "min_balance": D("2.50"), "plans": json.loads(PLANS_JSON)["plans"]}
    )
    config = engine.config
    assert config["version"] == 1 and config["min_balance"] == "2.50"
    again = PricingEngine.from_json(json.dumps(config))
    assert again.config == config
    config["models"].clear()  # a copy: the engine's own cannot change
    assert engine.config["models"]


def test_a_book_without_version_is_version_1() -> None:
    engine = PricingEngine.from_dict({"models": {"_default": "1"}})
    assert engine.config == {"models": {"_default": "1"}, "version": 1}
