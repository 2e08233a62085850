"""The pricing engine's values and packaging: ``UsageMetrics``,
``ToolCall`` and ``CostBreakdown`` check what they are given, importing
spendgate loads neither the engine nor litellm, and the pricing bench runs.

How: counts that are negative, booleans, floats, strings or too large, and
tool calls that are not ``ToolCall``s, are ``InvalidArgumentError``s;
``UsageMetrics`` is frozen and keeps its tool calls as a tuple; a tool call
needs a name; a breakdown sums its parts, clamps at zero and refuses sums
that do not hold, and the engine's breakdown equals a checked one; a fresh
interpreter imports spendgate lazily; the bench times each subject.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from pricing_helpers import DESIGN, D, usage
from spendgate.errors import InvalidArgumentError
from spendgate.pricing import (
    CostBreakdown,
    PricingEngine,
    ToolCall,
    UsageMetrics,
)
from spendgate.pricing.usage import MAX_COUNT

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
