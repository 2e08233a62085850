"""What the pricing tests share: ``D`` (``Decimal``), bursar's README
"Basic config" as JSON and as YAML, DESIGN.md's book, and ``usage``, which
builds a ``UsageMetrics`` (tests/test_pricing_engine.py,
tests/test_pricing_engine_loading.py, tests/test_pricing_engine_types.py);
``VARS``, a value for each of bursar's metrics, that expressions are
evaluated against (tests/test_pricing_expressions.py,
tests/test_pricing_expressions_hostile.py)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from spendgate.pricing import UsageMetrics

D = Decimal

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


VARS = {
    "input_tokens": 500,
    "output_tokens": 200,
    "cache_read_tokens": 0,
    "cache_write_tokens": 7,
    "tool_calls": 3,
    "search_queries": 2,
    "search_results": 10,
    "web_search_calls": 1,
    "code_exec_calls": 0,
}
