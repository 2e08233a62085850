"""The pricing expression language refuses what it does not allow, and
refusing runs nothing.

How: a list of hostile expressions (escapes through dunders and builtins,
comprehensions, lambdas, strings, powers, huge or deeply nested text,
unknown names and functions, wrong argument counts) is compiled with the
dangerous builtins replaced by tripwires; each must be a
``PricingConfigError`` naming the expression and a position, and no
tripwire may fire; a refusal points at the line and column of the
offence; an expression must be text. Hypothesis throws random text at the
compiler, which may only answer with ``PricingConfigError``.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import re
import subprocess
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pricing_helpers import VARS
from spendgate.errors import ExpressionError, PricingConfigError
from spendgate.pricing.expressions import TEXT_MAX, compile_expression

# -- hostile expressions ------------------------------------------------------

HOSTILE = [
    "__import__('os').system('touch /tmp/spendgate-pwned')",
    "__import__",
    "__builtins__",
    "().__class__.__bases__[0].__subclasses__()",
    "input_tokens.__class__",
    "input_tokens.__class__.__mro__[1].__subclasses__()",
    "(1).real",
    "input_tokens[0]",
    "[1][0]",
    "input_tokens[1:2]",
    "(lambda: 1)()",
    "lambda: input_tokens",
    "[x for x in (1, 2)]",
    "{x for x in (1,)}",
    "{x: 1 for x in (1,)}",
    "max(x for x in (1, 2))",
    "{1: 2}",
    "{1, 2}",
    "(1, 2)",
    "[input_tokens]",
    "f'{input_tokens}'",
    "f\"{__import__('os').system('id')}\"",
    "'a string'",
    "b'bytes'",
    "None",
    "...",
    "input_tokens if 'x' else 1",
    "input_tokens ** 2",
    "10 ** 10 ** 10",
    "2 ** -1",
    "9e99999999",
    "1e-31",
    "1" * 4000,
    "0." + "0" * 40 + "1",
    "1234567890123456789012345678901",
    "0x10",
    "0o17",
    "0b101",
    "1j",
    "(" * 10_000 + "1" + ")" * 10_000,
    "(" * 33 + "1" + ")" * 33,
    "[" * 40 + "]" * 40,
    "-" * 40 + "1",
    "not " * 40 + "1",
    "1 if input_tokens else " * 70 + "2",
    "1 + " * 1200 + "1",
    "(" + "1 + " * 150 + "1)",
    "x" * 1_000_000,
    "input_tokens + " * 300_000 + "1",
    "unknown_variable * 2",
    "inputtokens * 0.01",
    "this_tool_calls",
    "eval('1')",
    "exec('import os')",
    "open('/etc/passwd')",
    "compile('1', 'x', 'eval')",
    "getattr(input_tokens, 'real')",
    "globals()",
    "breakpoint()",
    "abs(input_tokens)",
    "sum(input_tokens, output_tokens)",
    "iF(1, 2, 3)",
    "input_tokens(1)",
    "min",
    "if",
    "min(input_tokens, key=1)",
    "round(x=1)",
    "max(*input_tokens)",
    "max(**input_tokens)",
    "(y := 1)",
    "(input_tokens := 5) * 2",
    "await input_tokens",
    "(yield)",
    "input_tokens @ 2",
    "input_tokens << 2",
    "input_tokens >> 2",
    "input_tokens | 2",
    "input_tokens & 2",
    "input_tokens ^ 2",
    "~input_tokens",
    "input_tokens is 1",
    "input_tokens is not 1",
    "input_tokens in 5",
    "input_tokens in (1, input_tokens)",
    "input_tokens in (1, 2) < 3",
    "if(1, 2)",
    "tier(1, 2, 3)",
    "tier(1, 2, 3, 4, 5)",
    "ceil()",
    "round(1, 2, 3)",
    "clamp(1, 2)",
    "percentile(50)",
    "min(" + ", ".join(["1"] * 201) + ")",
    "input_tokens(1)(2)",
    "import os",
    "input_tokens; 1",
    "1 +",
    "",
    "   ",
    "input_tokens\x00",
    "input_tokens = 1",
]


class Tripwire(Exception):
    pass


@contextlib.contextmanager
def tripwires() -> Iterator[list[str]]:
    """Replace what an escape would reach for while the block runs (only
    then: pytest itself imports), recording any call."""
    fired: list[str] = []

    def wire(name: str) -> Callable[..., object]:
        def fire(*args: object, **kwargs: object) -> object:
            fired.append(name)
            raise Tripwire(name)

        return fire

    targets = [(builtins, name) for name in _BUILTINS]
    targets += [(os, "system"), (os, "popen"), (subprocess, "Popen")]
    saved = [(owner, name, getattr(owner, name)) for owner, name in targets]
    # Set by hand: pytest's monkeypatch imports while it patches.
    for owner, name in targets:
        setattr(owner, name, wire(name))
    try:
        yield fired
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


# Not compile: ast.parse is compile(..., PyCF_ONLY_AST), which builds a tree
# and runs nothing.
_BUILTINS = ("__import__", "eval", "exec", "open", "breakpoint", "input")


def test_a_tripwire_fires_when_called() -> None:
    with tripwires() as fired, pytest.raises(Tripwire):
        eval("1")  # the tripwire runs, not eval
    assert fired == ["eval"]


def test_the_hostile_list_is_long_and_has_no_duplicates() -> None:
    assert len(HOSTILE) >= 30
    assert len(set(HOSTILE)) == len(HOSTILE)


@pytest.mark.parametrize(
    "text", HOSTILE, ids=[repr(t[:40]) + f"({len(t)})" for t in HOSTILE]
)
def test_hostile_expression_is_refused_at_load_running_nothing(text: str) -> None:
    with tripwires() as fired:
        try:
            compile_expression(text, "models.gpt-4o")
        except PricingConfigError as refused:
            error = refused
        else:
            pytest.fail("accepted")
    assert fired == []
    assert error.where == "models.gpt-4o"
    assert error.expression is not None
    if len(text) > TEXT_MAX:
        assert text.startswith(error.expression.removesuffix("..."))
    else:
        assert error.expression == text
    assert error.position is not None
    assert re.fullmatch(r"[1-9][0-9]*:[1-9][0-9]*", error.position)
    assert f"at {error.position}" in str(error)
    assert len(str(error)) < TEXT_MAX + 500
    assert not os.path.exists("/tmp/spendgate-pwned")


@pytest.mark.parametrize(
    ("text", "position", "reason"),
    [
        ("input_tokens + foo", "1:16", "unknown name 'foo'"),
        ("input_tokens + x.y", "1:16", "attribute access"),
        ("max(1, key=2)", "1:8", "keyword arguments"),
        ("(input_tokens +\n   foo)", "2:4", "unknown name 'foo'"),
        ("  \n  input_tokens * bar", "2:18", "unknown name 'bar'"),
        ("   input_tokens ** 2", "1:4", "exponentiation"),
        ("1 + 'é' + foo", "1:5", "strings"),
        # columns count characters, not the parser's UTF-8 bytes
        ("max('é', key=1)", "1:10", "keyword arguments"),
        ("(" * 33 + "1" + ")" * 33, "1:33", "brackets nested"),
        ("tier(1, 2, 3)", "1:1", "even number of arguments"),
        ("if(1, 2)", "1:1", "if\\(\\) takes 3 arguments"),
        ("input_tokens + * 2", "1:16", "syntax"),
    ],
)
def test_a_refusal_points_at_the_offence(text: str, position: str, reason: str) -> None:
    with pytest.raises(PricingConfigError, match=reason) as caught:
        compile_expression(text, "models.m")
    assert caught.value.position == position


def test_an_expression_must_be_text() -> None:
    with pytest.raises(PricingConfigError, match="must be a string, not int"):
        compile_expression(5, "models.m")  # type: ignore[arg-type]


# -- hypothesis -------------------------------------------------------------

PIECES = st.sampled_from(
    list("()[]{}+-*/%<>=!., _'\"#:;@~^&|\n")
    + ["if", "else", "and", "or", "not", "in", "lambda", "input_tokens", "tier"]
    + ["min", "0", "1.5", "1e5", "**", "__import__", "x", "True", "None"]
    + ["yield", "await", "if(", "f'", "0x1", "é"]
)


@settings(max_examples=500, deadline=None)
@given(st.lists(PIECES, max_size=40).map(" ".join) | st.text(max_size=60))
def test_random_text_is_compiled_or_refused_with_a_pricing_config_error(
    text: str,
) -> None:
    try:
        expr = compile_expression(text, "models.m")
    except PricingConfigError as error:
        assert error.position is not None
        return
    try:
        expr.evaluate(VARS)
    except ExpressionError:
        pass
