"""The pricing expression language: what it allows and what a fault in
evaluating it is.

How: every allowed construct is compiled and evaluated against the value
bursar's documentation gives (exact ``Decimal``s, compared by value); a
tool expression alone may read its own count; an expression knows the
variables it reads, and they are bursar's metrics; evaluation faults are
``ExpressionError``s (an ``InvalidArgumentError``, not a configuration
error). Hypothesis generates random allowed expressions and checks them
against an independent evaluator written here with Python's own
``Decimal`` operators. What the language refuses, hostile expressions
among it, is in tests/test_pricing_expressions_hostile.py.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal, localcontext

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pricing_helpers import VARS, D
from spendgate.errors import ExpressionError, PricingConfigError
from spendgate.pricing.expressions import (
    METRIC_VARIABLES,
    TOOL_VARIABLES,
    compile_expression,
)
from spendgate.pricing.functions import CONTEXT


def value(text: str, **variables: int) -> Decimal:
    return compile_expression(text, "test").evaluate({**VARS, **variables})


ALLOWED = [
    # arithmetic, exact: literals are read from their text, never as floats
    ("input_tokens * 0.001 + output_tokens * 0.003", D("1.1")),
    ("input_tokens * 0.1 + output_tokens * 0.2 - 50 - 40", D("0")),
    ("0.1 + 0.2", D("0.3")),
    ("output_tokens - input_tokens", D(-300)),
    ("input_tokens / 3", CONTEXT.divide(D(500), D(3))),
    ("output_tokens * (0.03 / 1000)", D("0.006")),
    ("input_tokens // 1000", D(0)),
    ("input_tokens // 7", D(71)),
    ("input_tokens % 7", D(3)),
    # Decimal's // and % (bursar's): toward zero, the sign of the dividend
    ("-7 // 2", D(-3)),
    ("-7 % 2", D(-1)),
    ("7 % -2", D(1)),
    ("-input_tokens", D(-500)),
    ("+input_tokens", D(500)),
    ("- -input_tokens", D(500)),
    ("2 + 3 * 4", D(14)),
    ("(2 + 3) * 4", D(20)),
    ("1_000 * 2", D(2000)),
    ("1e3 + .5 + 5.", D("1005.5")),
    ("0.0000025 * 1000000", D("2.5")),
    # comparisons give 1 or 0, chained as in Python
    ("output_tokens == 200", D(1)),
    ("output_tokens != 200", D(0)),
    ("output_tokens < 1000", D(1)),
    ("output_tokens <= 200", D(1)),
    ("output_tokens > 200", D(0)),
    ("output_tokens >= 201", D(0)),
    ("0 < output_tokens < input_tokens", D(1)),
    ("0 < input_tokens < output_tokens", D(0)),
    ("(output_tokens > 100) * 5", D(5)),
    ("input_tokens in (1, 500, 3)", D(1)),
    ("input_tokens in [1, 2]", D(0)),
    ("input_tokens not in (1, 2)", D(1)),
    ("input_tokens not in (500.0,)", D(0)),
    ("-3 in (-3, 3)", D(1)),
    # boolean: `and`/`or` give an operand, as in Python (and bursar)
    ("tool_calls > 0 and tool_calls <= 10", D(1)),
    ("tool_calls == 0 or cache_read_tokens > 0", D(0)),
    ("0 or 5", D(5)),
    ("3 and 4", D(4)),
    ("0 and 4", D(0)),
    ("not output_tokens", D(0)),
    ("not code_exec_calls", D(1)),
    ("5 if not (tool_calls > 10) else 10", D(5)),
    ("True + True", D(2)),
    ("False", D(0)),
    # bursar reads `(not a) < b` as `not (a < b)`
    ("(not input_tokens) < 3", D(1)),
    ("(not code_exec_calls) < 3", D(0)),
    # conditional expressions, both spellings
    ("output_tokens * 0.5 if output_tokens > 1000 else output_tokens * 0.3", D(60)),
    ("1 if(output_tokens > 100) else 2", D(1)),
    ("if(input_tokens > 1000, 1, 2)", D(2)),
    ("if (input_tokens > 100, 1, 2)", D(1)),
    ("3 * if(tool_calls, 2, 0)", D(6)),
    ("1 if if(tool_calls, 0, 1) else 2", D(2)),
    ("max(if(1, 2, 3), if(0, 4, 5))", D(5)),
    # only the branch taken is evaluated
    ("if(code_exec_calls == 0, 0, 1 / code_exec_calls)", D(0)),
    ("0 if code_exec_calls == 0 else 1 / code_exec_calls", D(0)),
    ("code_exec_calls and 1 / code_exec_calls", D(0)),
    # functions
    ("ceil(input_tokens * 0.001)", D(1)),
    ("ceil(-1.5)", D(-1)),
    ("ceil(2)", D(2)),
    ("floor(output_tokens / 1000)", D(0)),
    ("floor(-1.5)", D(-2)),
    ("round(2.5)", D(3)),
    ("round(-2.5)", D(-3)),
    ("round(3.5)", D(4)),
    ("round(2.4)", D(2)),
    ("round(input_tokens / 3, 2)", D("166.67")),
    ("round(0.125, 2)", D("0.13")),
    ("round(1250, -2)", D(1300)),
    ("round(1.5, 0.9)", D(2)),
    ("min(3)", D(3)),
    ("min(input_tokens, output_tokens, 7)", D(7)),
    ("max(0, output_tokens - input_tokens)", D(0)),
    ("max(1, 2, 3, -4)", D(3)),
    ("tier(input_tokens, 10000, 5, 100000, 10, 20)", D(5)),
    ("tier(10000, 10000, 5, 100000, 10, 20)", D(10)),
    ("tier(99999, 10000, 5, 100000, 10, 20)", D(10)),
    ("tier(100000, 10000, 5, 100000, 10, 20)", D(20)),
    ("tier(input_tokens, 100, 1, 9)", D(9)),
    ("tier(50, 100, 1, 9)", D(1)),
    ("clamp(tool_calls, 0, 100)", D(3)),
    ("clamp(-5, 0, 100)", D(0)),
    ("clamp(500, 0, 100)", D(100)),
    ("clamp(50, 10, 5)", D(10)),
    ("percentile(50, input_tokens, output_tokens, tool_calls)", D(200)),
    ("percentile(0, 5, 1, 9)", D(1)),
    ("percentile(100, 5, 1, 9)", D(9)),
    ("percentile(25, 10, 20)", D("12.5")),
    ("percentile(50, 10, 20, 30, 40)", D(25)),
    ("percentile(90, 7)", D(7)),
    # the text around the expression
    ("  input_tokens  ", D(500)),
    ("input_tokens\n", D(500)),
    ("(input_tokens +\n output_tokens)", D(700)),
    ("input_tokens  # a comment", D(500)),
]


@pytest.mark.parametrize(("text", "expected"), ALLOWED)
def test_allowed_construct_evaluates_as_bursar_documents(
    text: str, expected: Decimal
) -> None:
    result = value(text)
    assert isinstance(result, Decimal)
    assert result == expected


def test_the_readme_quick_start_expression_is_exactly_1_1() -> None:
    result = value("input_tokens * 0.001 + output_tokens * 0.003")
    assert result == Decimal("1.1")
    assert str(result) == "1.100"


def test_a_tool_expression_may_read_its_own_count_and_nothing_else_may() -> None:
    tool = compile_expression(
        "this_tool_calls * 2", "tools.x", variables=TOOL_VARIABLES
    )
    assert tool.evaluate({"this_tool_calls": 4}) == 8
    with pytest.raises(PricingConfigError, match="unknown name 'this_tool_calls'"):
        compile_expression("this_tool_calls * 2", "models.x")


def test_an_expression_knows_the_variables_it_reads() -> None:
    expr = compile_expression("input_tokens * 2 + max(tool_calls, 1)", "m")
    assert expr.variables == {"input_tokens", "tool_calls"}
    assert expr.evaluate({"input_tokens": 1, "tool_calls": 0}) == 3


@pytest.mark.parametrize(
    ("text", "variables", "reason"),
    [
        ("1 / 0", {}, "division by zero"),
        ("input_tokens / code_exec_calls", {}, "division by zero"),
        ("input_tokens // 0", {}, "division by zero"),
        ("input_tokens % 0", {}, "modulo by zero"),
        ("0 / 0", {}, "division by zero"),
        ("0.0 % 0", {}, "modulo by zero"),
        ("1 / (output_tokens - 200)", {}, "division by zero"),
        ("input_tokens * 1e30 * 1e30 * 1e30", {}, "beyond 1E\\+60"),
        ("1e9 + 1", {}, "beyond ±1000000000"),
        ("-1e9 - 0.000001", {}, "beyond ±1000000000"),
        ("input_tokens * 1e7", {}, "beyond ±1000000000"),
        ("round(1, 31)", {}, "round\\(\\) takes"),
        ("round(1, input_tokens)", {}, "round\\(\\) takes"),
        ("percentile(101, 1, 2)", {}, "0 <= p <= 100"),
        ("percentile(0 - tool_calls, 1, 2)", {}, "0 <= p <= 100"),
        ("input_tokens", {"input_tokens": None}, "not an int"),
        ("input_tokens", {"input_tokens": True}, "not an int"),
        ("input_tokens", {"input_tokens": 1.5}, "not an int"),
        ("input_tokens", {"input_tokens": Decimal("NaN")}, "not an int"),
    ],
)
def test_evaluation_faults_are_expression_errors(
    text: str, variables: dict[str, object], reason: str
) -> None:
    expr = compile_expression(text, "models.m")
    with pytest.raises(ExpressionError, match=reason) as caught:
        expr.evaluate({**VARS, **variables})  # type: ignore[dict-item]
    assert caught.value.expression == text


def test_a_missing_variable_is_an_expression_error() -> None:
    expr = compile_expression("input_tokens + output_tokens", "m")
    with pytest.raises(ExpressionError, match="no value for output_tokens"):
        expr.evaluate({"input_tokens": 1})


def test_an_expression_error_is_an_invalid_argument_not_a_config_error() -> None:
    from spendgate.errors import ConfigurationError, InvalidArgumentError

    with pytest.raises(InvalidArgumentError) as caught:
        value("1 / 0")
    assert not isinstance(caught.value, ConfigurationError)


def test_the_variables_are_bursars_metrics() -> None:
    assert METRIC_VARIABLES == set(VARS)
    assert TOOL_VARIABLES == set(VARS) | {"this_tool_calls"}


# -- hypothesis -------------------------------------------------------------

Ref = Callable[[dict[str, Decimal]], Decimal]
Gen = tuple[str, Ref]

_B = {True: D(1), False: D(0)}


def _number() -> st.SearchStrategy[Gen]:
    numbers = st.decimals(
        min_value=-(10**6), max_value=10**6, places=3, allow_nan=False
    )
    return numbers.map(lambda d: (f"({d:f})", lambda env, d=d: +d))


def _variable() -> st.SearchStrategy[Gen]:
    return st.sampled_from(sorted(METRIC_VARIABLES)).map(
        lambda n: (n, lambda env, n=n: env[n])
    )


def _binary(children: st.SearchStrategy[Gen]) -> st.SearchStrategy[Gen]:
    ops: dict[str, Callable[[Decimal, Decimal], Decimal]] = {
        "+": lambda a, b: a + b,
        "-": lambda a, b: a - b,
        "*": lambda a, b: a * b,
        "/": lambda a, b: a / b,
        "//": lambda a, b: a // b,
        "%": lambda a, b: a % b,
        "<": lambda a, b: _B[a < b],
        ">=": lambda a, b: _B[a >= b],
        "==": lambda a, b: _B[a == b],
        "and": lambda a, b: b if a else a,
        "or": lambda a, b: a if a else b,
    }

    def build(op: str, left: Gen, right: Gen) -> Gen:
        f = ops[op]
        return (
            f"({left[0]} {op} {right[0]})",
            lambda env: f(left[1](env), right[1](env)),
        )

    return st.builds(build, st.sampled_from(sorted(ops)), children, children)


def _call(children: st.SearchStrategy[Gen]) -> st.SearchStrategy[Gen]:
    def minimum(args: list[Gen]) -> Gen:
        return (
            "min(" + ", ".join(a[0] for a in args) + ")",
            lambda env: min(a[1](env) for a in args),
        )

    def clamp(x: Gen, lo: Gen, hi: Gen) -> Gen:
        return (
            f"clamp({x[0]}, {lo[0]}, {hi[0]})",
            lambda env: max(lo[1](env), min(x[1](env), hi[1](env))),
        )

    def choose(c: Gen, t: Gen, f: Gen) -> Gen:
        return (
            f"if({c[0]}, {t[0]}, {f[0]})",
            lambda env: t[1](env) if c[1](env) else f[1](env),
        )

    def rounded(x: Gen) -> Gen:
        return (
            f"round({x[0]}, 2)",
            lambda env: x[1](env).quantize(D("0.01"), rounding=ROUND_HALF_UP),
        )

    def negated(x: Gen) -> Gen:
        return (f"(-{x[0]})", lambda env: -x[1](env))

    return st.one_of(
        st.lists(children, min_size=1, max_size=4).map(minimum),
        st.builds(clamp, children, children, children),
        st.builds(choose, children, children, children),
        st.builds(rounded, children),
        st.builds(negated, children),
    )


EXPRESSIONS = st.recursive(
    st.one_of(_number(), _variable()),
    lambda children: st.one_of(_binary(children), _call(children)),
    max_leaves=25,
)
VARIABLE_VALUES = st.fixed_dictionaries(
    {name: st.integers(0, 10**9) for name in sorted(METRIC_VARIABLES)}
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EXPRESSIONS, VARIABLE_VALUES)
def test_random_allowed_expressions_match_python_decimal_or_raise_expression_error(
    generated: Gen, variables: dict[str, int]
) -> None:
    text, reference = generated
    expr = compile_expression(text, "models.m")
    env = {name: Decimal(v) for name, v in variables.items()}
    try:
        with localcontext(CONTEXT):
            expected: Decimal | None = reference(env)
    except ArithmeticError:
        expected = None
    try:
        result = expr.evaluate(variables)
    except ExpressionError:
        # The same fault, or a result the reference computed but that is
        # beyond the stated range.
        assert expected is None or abs(expected) > Decimal(10) ** 9
        return
    assert expected is not None
    assert result == expected
