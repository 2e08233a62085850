"""The price book engine: bursar's books load unchanged and price exactly.

How: the configurations of bursar's README (the quick start, "Basic
config", "With plans", the `pricing set` example) and DESIGN.md's are
loaded as JSON text, as YAML text and as data, and priced against values
worked out by hand from bursar's rules (per-tool counts, search and cache
sections, the zero clamp, plan rate overrides); books bursar refuses are
refused with a ``PricingConfigError`` naming the place; hostile documents
(deep nesting, alias bombs, oversize, non-finite numbers) are refused
quickly; ``UsageMetrics`` and ``CostBreakdown`` check what they are given.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from spendgate.errors import (
    ExpressionError,
    InvalidArgumentError,
    PricingConfigError,
    UnknownModelError,
)
from spendgate.pricing import (
    CostBreakdown,
    PricingEngine,
    ToolCall,
    UsageMetrics,
)
from spendgate.pricing.usage import MAX_COUNT

D = Decimal

QUICK_START = {
    "version": 1,
    "models": {"_default": "input_tokens * 0.001 + output_tokens * 0.003"},
}

# bursar's README, "Pricing Configuration / Basic config", verbatim
BASIC_JSON = """
{
  "version": 1,
  "models": {
    "gpt-4": "input_tokens * 0.01 + output_tokens * 0.03",
    "_default": "input_tokens * 0.001 + output_tokens * 0.003"
  },
  "tools": { "_default": "tool_calls * 0" },
  "search": { "costs": "search_queries * 0.5 + search_results * 0.05" },
  "cache": { "discount": "-cache_read_tokens * 0.0045" },
  "fixed": { "batch_job": 20 },
  "min_balance": 5
}
"""

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

# The same basic config as a bursar user would write it in YAML
BASIC_YAML = """
version: 1
models:
  gpt-4: input_tokens * 0.01 + output_tokens * 0.03
  _default: input_tokens * 0.001 + output_tokens * 0.003
tools:
  _default: tool_calls * 0
search:
  costs: search_queries * 0.5 + search_results * 0.05
cache:
  discount: -cache_read_tokens * 0.0045
fixed:
  batch_job: 20
min_balance: 5
"""

DESIGN = {
    "version": 1,
    "models": {
        "gpt-4o": "input_tokens * 0.0000025 + output_tokens * 0.00001",
        "_default": "input_tokens * 0.000001 + output_tokens * 0.000003",
    },
    "tools": {"web_search": "tool_calls * 0.01", "_default": "tool_calls * 0"},
    "search": {"costs": "search_queries * 0.005 + search_results * 0.0005"},
    "cache": {"discount": "-cache_read_tokens * 0.0000012"},
    "fixed": {"batch_job": 20},
    "min_balance": 5,
}


def usage(**fields: Any) -> UsageMetrics:
    return UsageMetrics(**fields)


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


# -- books that do not load ---------------------------------------------------


@pytest.mark.parametrize(
    ("book", "where", "reason"),
    [
        ({}, "models", "must be a mapping"),
        ({"models": {}}, "models", "at least one model"),
        ({"models": "x"}, "models", "must be a mapping"),
        ({"models": {"m": 5}}, "models.m", "must be a string"),
        ({"models": {"m": "input_tokens ** 2"}}, "models.m", "exponentiation"),
        ({"models": {"m": "this_tool_calls"}}, "models.m", "unknown name"),
        ({"models": {"m": "1"}, "min_balnce": 5}, "min_balnce", "unknown key"),
        ({"models": {"m": "1"}, "version": 2}, "version", "must be 1"),
        ({"models": {"m": "1"}, "version": "1"}, "version", "must be 1"),
        ({"models": {"m": "1"}, "version": True}, "version", "must be 1"),
        ({"models": {"m": "1"}, "tools": {"t": "x.y"}}, "tools.t", "attribute"),
        ({"models": {"m": "1"}, "search": {"costs": "foo"}}, "search.costs", "unknown"),
        (
            {"models": {"m": "1"}, "search": {"costs": "1", "rag": {"costs": "2"}}},
            "search.rag",
            "unknown key",
        ),
        ({"models": {"m": "1"}, "search": {}}, "search", "needs costs"),
        ({"models": {"m": "1"}, "cache": {"costs": "1"}}, "cache.costs", "unknown"),
        ({"models": {"m": "1"}, "cache": 5}, "cache", "must be a string"),
        ({"models": {"m": "1"}, "fixed": {"j": -1}}, "fixed.j", "must be >= 0"),
        ({"models": {"m": "1"}, "fixed": {"j": "x"}}, "fixed.j", "not a number"),
        ({"models": {"m": "1"}, "fixed": {"j": True}}, "fixed.j", "a number"),
        ({"models": {"m": "1"}, "fixed": {"j": 2e9}}, "fixed.j", "within"),
        ({"models": {"m": "1"}, "fixed": {"": 1}}, "fixed", "1 to 256"),
        ({"models": {"m": "1"}, "min_balance": -5}, "min_balance", ">= 0"),
        ({"models": {"m": "1"}, "signup_bonus": -1}, "signup_bonus", ">= 0"),
        (
            {"models": {"m": "1"}, "plans": {"p": {"id": "p"}}},
            "plans.p.name",
            "required",
        ),
        (
            {"models": {"m": "1"}, "plans": {"p": {"name": "P"}}},
            "plans.p.id",
            "required",
        ),
        (
            {"models": {"m": "1"}, "plans": {"p": {"id": "p", "name": "P", "x": 1}}},
            "plans.p.x",
            "unknown key",
        ),
        (
            {
                "models": {"m": "1"},
                "plans": {
                    "a": {"id": "a", "name": "Same"},
                    "b": {"id": "b", "name": "Same"},
                },
            },
            "plans.b",
            "also plan a",
        ),
        (
            {
                "models": {"m": "1"},
                "plans": {"p": {"id": "p", "name": "P", "free_allowance": -1}},
            },
            "plans.p.free_allowance",
            ">= 0",
        ),
        (
            {
                "models": {"m": "1"},
                "plans": {
                    "p": {"id": "p", "name": "P", "rate_overrides": {"m": "a.b"}}
                },
            },
            "plans.p.rate_overrides.m",
            "attribute",
        ),
        (
            {
                "models": {"m": "1"},
                "plans": {
                    "p": {
                        "id": "p",
                        "name": "P",
                        "feature_limits": {"f": {"max_calls": 5, "period": "hourly"}},
                    }
                },
            },
            "plans.p.feature_limits.f.period",
            "one of daily, weekly, monthly, yearly",
        ),
        (
            {
                "models": {"m": "1"},
                "plans": {
                    "p": {
                        "id": "p",
                        "name": "P",
                        "feature_limits": {"f": {"max_calls": 5, "action": "block"}},
                    }
                },
            },
            "plans.p.feature_limits.f.action",
            "one of deny, warn, notify",
        ),
        (
            {
                "models": {"m": "1"},
                "plans": {
                    "p": {"id": "p", "name": "P", "feature_limits": {"f": {}}},
                },
            },
            "plans.p.feature_limits.f.max_calls",
            "integer >= 0",
        ),
        (
            {
                "models": {"m": "1"},
                "plans": {
                    "p": {
                        "id": "p",
                        "name": "P",
                        "billing_mode": "strict",
                        "default_billing_mode": "strict",
                    }
                },
            },
            "plans.p.billing_mode",
            "unknown key",
        ),
        ({"models": {"m": "1"}, "tiers": {}}, "tiers", "must not be empty"),
        (
            {
                "models": {"m": "1"},
                "tiers": {
                    "a": {"name": "A", "priority": 1, "is_default": True},
                    "b": {"name": "B", "priority": 2, "is_default": True},
                },
            },
            "tiers",
            "is_default",
        ),
        (
            {"models": {"m": "1"}, "tiers": {"a": {"name": "A"}}},
            "tiers.a.priority",
            "integer",
        ),
        (
            {"models": {"m": "1"}, "subscriptions": {"s": 1}},
            "subscriptions.s",
            "mapping",
        ),
        ({"models": {1: "1"}}, "models", "not a string"),
        ({"models": {"m": "1"}, "fixed": {"j": float("nan")}}, "fixed.j", "finite"),
        ({"models": {"m": "1"}, "fixed": {"j": object()}}, "fixed.j", "cannot be in"),
    ],
)
def test_a_book_bursar_refuses_is_refused_naming_the_place(
    book: dict[str, Any], where: str, reason: str
) -> None:
    with pytest.raises(PricingConfigError, match=reason) as caught:
        PricingEngine.from_dict(book)
    assert caught.value.where == where


def test_every_bursar_top_level_key_is_accepted() -> None:
    engine = PricingEngine.from_dict(
        {
            **json.loads(BASIC_JSON),
            "signup_bonus": 50,
            "plans": {
                "p": {
                    "id": "p",
                    "name": "P",
                    "billing_mode": "overdraft",
                    "per_operation": {"chat": {"billing_mode": "strict"}},
                    "max_concurrent": 4,
                    "overdraft_floor": -10,
                    "allowance_period": "anniversary",
                    "features": None,
                    "feature_limits": {"f": {"max_calls": 1, "action": "warn"}},
                }
            },
            "tiers": {
                "gift": {"name": "Gift", "priority": 0, "expires": True},
                "paid": {"name": "Paid", "priority": 1, "is_default": True},
            },
            "subscriptions": {"monthly": {"price": 10}},
            "credit_topups": {"small": {"credits": 100}},
        }
    )
    assert engine.config["tiers"]["paid"]["is_default"] is True
    assert engine.plans["p"]["overdraft_floor"] == -10


def test_an_expression_error_in_a_book_names_the_expression_and_its_position() -> None:
    with pytest.raises(PricingConfigError) as caught:
        PricingEngine.from_dict({"models": {"gpt-4": "input_tokens * cost"}})
    error = caught.value
    assert (error.where, error.expression, error.position) == (
        "models.gpt-4",
        "input_tokens * cost",
        "1:16",
    )
    assert str(error).startswith("models.gpt-4: unknown name 'cost'")


# -- hostile documents ----------------------------------------------------------


@pytest.mark.parametrize(
    ("load", "reason"),
    [
        (lambda: PricingEngine.from_json("[" * 100_000 + "]" * 100_000), "JSON"),
        (lambda: PricingEngine.from_yaml("[" * 100_000 + "]" * 100_000), "YAML"),
        (lambda: PricingEngine.from_json('{"models": ' * 40 + "1" + "}" * 40), "deep"),
        (lambda: PricingEngine.from_json(" " * (1 << 20) + "{}"), "at most"),
        (lambda: PricingEngine.from_yaml(b"\xff\xfe\x00"), "UTF-8"),
        (lambda: PricingEngine.from_json('{"models": NaN}'), "NaN is not a number"),
        (lambda: PricingEngine.from_json('{"models": {"m": "1"}'), "not valid JSON"),
        (lambda: PricingEngine.from_json("[1]"), "must be a mapping"),
        (
            lambda: PricingEngine.from_yaml("models: {m: '1'}\nfixed: {j: .inf}"),
            "finite",
        ),
        (
            lambda: PricingEngine.from_yaml("models: {m: '1'}\nfixed: {j: .nan}"),
            "finite",
        ),
        (lambda: PricingEngine.from_yaml("models: {m: 2024-01-01}"), "date"),
        (lambda: PricingEngine.from_yaml("models: {1: '1'}"), "not a string"),
        (
            lambda: PricingEngine.from_yaml("models: !!python/object:os.system x"),
            "YAML",
        ),
        (lambda: PricingEngine.from_yaml("models: ["), "YAML"),
        (
            lambda: PricingEngine.from_json('{"models": {"m": ' + "9" * 5000 + "}}"),
            "JSON",
        ),
    ],
)
def test_a_hostile_document_is_refused_quickly(load: Any, reason: str) -> None:
    started = time.perf_counter()
    with pytest.raises(PricingConfigError, match=reason):
        load()
    assert time.perf_counter() - started < 2


def test_a_yaml_alias_bomb_is_refused_by_the_value_budget() -> None:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    for i, name in enumerate("bcdefghij"):
        prev = "abcdefghij"[i]
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 10) + "]")
    bomb = "\n".join(lines)
    started = time.perf_counter()
    with pytest.raises(PricingConfigError, match="at most 100000 values"):
        PricingEngine.from_yaml(
            "models: {m: '1'}\nsubscriptions:\n  s:\n    "
            + bomb.replace("\n", "\n    ")
        )
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("book.json", BASIC_JSON),
        ("book.yaml", BASIC_YAML),
        ("book.yml", BASIC_YAML),
        ("book.txt", BASIC_JSON),
        ("book", BASIC_YAML),
    ],
)
def test_from_file_reads_json_or_yaml_by_extension_then_content(
    tmp_path: Path, name: str, text: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    assert PricingEngine.from_file(path).config == json.loads(BASIC_JSON)
    assert PricingEngine.from_file(str(path)).min_balance == 5


def test_from_file_refuses_a_missing_or_oversized_file(tmp_path: Path) -> None:
    with pytest.raises(PricingConfigError, match="cannot read"):
        PricingEngine.from_file(tmp_path / "absent.json")
    big = tmp_path / "big.json"
    big.write_bytes(b" " * ((1 << 20) + 1))
    with pytest.raises(PricingConfigError, match="at most"):
        PricingEngine.from_file(big)


# -- UsageMetrics, ToolCall, CostBreakdown ------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"input_tokens": -1},
        {"output_tokens": True},
        {"cache_read_tokens": 1.0},
        {"search_queries": "3"},
        {"code_exec_calls": MAX_COUNT + 1},
        {"model": 4},
        {"tool_calls": ["web_search"]},
        {"tool_calls": ToolCall("x")},
        {"tool_calls": {ToolCall("x")}},
    ],
)
def test_usage_metrics_refuse_what_is_not_a_count(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError):
        UsageMetrics(**fields)


def test_usage_metrics_keep_tool_calls_as_a_tuple_and_are_frozen() -> None:
    metrics = UsageMetrics(
        model="m", tool_calls=[ToolCall("a")], web_search_calls=MAX_COUNT
    )
    assert metrics.tool_calls == (ToolCall("a"),)
    with pytest.raises(AttributeError):
        metrics.input_tokens = 5  # type: ignore[misc]


@pytest.mark.parametrize("name", ["", "x" * 257, 5, None])
def test_a_tool_call_needs_a_name(name: object) -> None:
    with pytest.raises(InvalidArgumentError):
        ToolCall(name)  # type: ignore[arg-type]


def test_a_breakdown_sums_its_parts_and_clamps_at_zero() -> None:
    parts = CostBreakdown.from_parts(
        model=D("1.5"), tools_by_name={"a": D(1), "b": D(2)}, cache=D(-1)
    )
    assert parts.tools == 3 and parts.total == D("3.5")
    assert CostBreakdown.from_parts(model=D(1), cache=D(-5)).total == 0
    assert parts.to_dict() == {
        "total": "3.5",
        "model": "1.5",
        "tools": "3",
        "search": "0",
        "cache": "-1",
        "fixed": "0",
        "tools_by_name": {"a": "1", "b": "2"},
    }
    with pytest.raises(TypeError):
        parts.tools_by_name["c"] = D(1)  # type: ignore[index]


@pytest.mark.parametrize(
    "fields",
    [
        (D(2), D(1), D(0), D(0), D(0), D(0), {}),
        (D(1), D(1), D(1), D(0), D(0), D(0), {}),
        (D(1), D(1), D(0), D(0), D(0), D(0), {"a": D(1)}),
        (D(-1), D(1), D(0), D(0), D(-2), D(0), {}),
        (1, D(1), D(0), D(0), D(0), D(0), {}),
        (D("NaN"), D(1), D(0), D(0), D(0), D(0), {}),
    ],
)
def test_a_breakdown_whose_sums_do_not_hold_is_refused(fields: tuple[Any, ...]) -> None:
    with pytest.raises(InvalidArgumentError):
        CostBreakdown(*fields)


def test_the_engines_breakdown_equals_a_checked_one() -> None:
    engine = PricingEngine.from_dict(DESIGN)
    result = engine.calculate(
        usage(
            model="gpt-4o",
            input_tokens=10**12,
            tool_calls=[ToolCall("web_search"), ToolCall("x")],
            cache_read_tokens=3,
        )
    )
    checked = CostBreakdown.from_parts(
        model=result.model,
        tools_by_name=result.tools_by_name,
        search=result.search,
        cache=result.cache,
    )
    assert result == checked


def test_importing_spendgate_loads_neither_the_engine_nor_litellm() -> None:
    code = (
        "import sys, spendgate\n"
        "assert 'spendgate.pricing.engine' not in sys.modules\n"
        "from spendgate import PricingEngine, UsageMetrics, ToolCall, CostBreakdown\n"
        "from spendgate.pricing import PricingEngine as P\n"
        "assert P is PricingEngine\n"
        "assert 'litellm' not in sys.modules\n"
        "e = PricingEngine.from_yaml('models: {_default: input_tokens * 2}')\n"
        "print(e.calculate(UsageMetrics(input_tokens=3)).total)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "6"


def test_the_pricing_bench_times_each_subject(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from bench.pricing_bench import main

    code = main(["--samples", "300"])
    out = capsys.readouterr().out
    for subject in ("calculate (5 dimensions)", "calculate_fixed", "load the book"):
        assert subject in out
    assert "calculate p50" in out
    assert code == (0 if "within the 20 µs target" in out else 1)
