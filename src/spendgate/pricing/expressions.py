"""Safe pricing expressions: bursar's language, checked once at load and
compiled to closures that do exact ``Decimal`` arithmetic.

The language (bursar's): numbers, the variables below, ``+ - * / // %``,
unary ``+ -``, ``== != < <= > >=`` (chained as in Python), ``and or not``,
``x if c else y``, and the calls ``ceil floor round min max if tier clamp
percentile`` (meanings in :mod:`spendgate.pricing.functions`). Comparisons
give 1 or 0; ``and``/``or`` give an operand, as in Python. ``//`` and ``%``
truncate toward zero (``Decimal``'s, as bursar's). ``x in (1, 2, 3)`` and
``not in`` test membership in a literal tuple or list of numbers; bursar's
``in`` on two numbers compared their decimal strings as substrings, which
spendgate refuses at load. Anything else is a :class:`PricingConfigError`
naming the expression and the ``line:column`` of the offence: attributes,
subscripts, other calls, ``**``, lambdas, comprehensions, strings,
f-strings, keywords, starred arguments, ``:=``, unknown names.

Bounds (a hostile book can neither hang nor exhaust the process):

- text: at most :data:`TEXT_MAX` (4,096) characters and :data:`TOKENS_MAX`
  (1,000) tokens; brackets nested at most :data:`BRACKETS_MAX` (32) deep;
  at most :data:`PREFIX_RUN_MAX` (32) prefix operators (``- + ~ not``) in a
  row and :data:`RIGHT_NESTING_MAX` (64) of ``if``/``lambda``/``**``, all
  checked on the text, before Python's parser sees it;
- tree: at most :data:`NODES_MAX` (1,000) nodes, :data:`DEPTH_MAX` (100)
  levels deep, and 200 arguments per call;
- numbers: at most 30 significant digits, exponent within ±30;
- evaluation: 80 significant digits, intermediate results below ``1E+61``,
  and the result within ±``MAX_AMOUNT`` (1e9): else ``ExpressionError``,
  as for division or modulo by zero.
"""

from __future__ import annotations

import ast
import keyword
import re
from collections.abc import Collection, Mapping
from decimal import Decimal
from typing import NoReturn, final

from spendgate.core.money import MAX_AMOUNT
from spendgate.errors import ExpressionError, PricingConfigError
from spendgate.pricing.compiler import Compiler, Fn
from spendgate.pricing.functions import EvaluationFailure

__all__ = [
    "METRIC_VARIABLES",
    "TOOL_VARIABLES",
    "Expression",
    "compile_expression",
]

#: the variables every expression may read (bursar's metrics)
METRIC_VARIABLES: frozenset[str] = frozenset(
    {
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "tool_calls",
        "search_queries",
        "search_results",
        "web_search_calls",
        "code_exec_calls",
    }
)
#: a ``tools.*`` expression may also read that tool's own call count
TOOL_VARIABLES: frozenset[str] = METRIC_VARIABLES | {"this_tool_calls"}

TEXT_MAX = 4096
TOKENS_MAX = 1000
BRACKETS_MAX = 32
PREFIX_RUN_MAX = 32
RIGHT_NESTING_MAX = 64
NODES_MAX = 1000
DEPTH_MAX = 100

# `if` is a keyword, so bursar's `if(c, t, f)` cannot parse: each such `if`
# becomes this name, as long (so every column stays), and only a name at a
# position recorded here is the function.
_IF_NAME = "iF"
_IF_CALL = re.compile(r"\bif(?=\s*\()")
_TOKEN = re.compile(r"\w+|\*\*|\S")
_PREFIX = frozenset({"-", "+", "~", "not", "await"})
_RIGHT_NESTING = frozenset({"if", "lambda", "**"})
_OPENING = frozenset("([{")
_CLOSING = frozenset(")]}")
# Words after which `if(` is a conditional expression's `if`, not a call.
_VALUE_WORDS = frozenset({"True", "False", "None"})


@final
class Expression:
    """One compiled expression. Immutable; safe to share between threads.

    :ivar text: the expression as written
    :ivar where: where it sits in its book (``models.gpt-4o``)
    :ivar variables: the variables it reads
    """

    __slots__ = ("_run", "text", "variables", "where")

    def __init__(self, text: str, where: str, variables: frozenset[str], run: Fn):
        self.text = text
        self.where = where
        self.variables = variables
        self._run = run

    def __repr__(self) -> str:
        return f"Expression({self.text!r}, where={self.where!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Expression):
            return NotImplemented
        return self.text == other.text and self.variables == other.variables

    def __hash__(self) -> int:
        return hash(self.text)

    def evaluate(self, variables: Mapping[str, int]) -> Decimal:
        """The value for these variables, exact.

        :param variables: a value (``int`` or finite ``Decimal``) for each
            variable the expression reads; others are ignored
        :raise ExpressionError: for a missing or non-numeric variable,
            division or modulo by zero, or a result out of range
        """
        env: dict[str, Decimal] = {}
        for name in self.variables:
            if name not in variables:
                raise ExpressionError(self.text, f"no value for {name}")
            value = variables[name]
            if value.__class__ is int:
                env[name] = Decimal(value)
            elif isinstance(value, Decimal) and value.is_finite():
                env[name] = value
            else:
                raise ExpressionError(self.text, f"{name} is not an int")
        return self.evaluate_decimals(env)

    def evaluate_decimals(self, env: dict[str, Decimal]) -> Decimal:
        """:meth:`evaluate` for variables already ``Decimal`` (the engine's
        path: no conversion, no checks on the input)."""
        try:
            result = self._run(env)
        except EvaluationFailure as failure:
            raise ExpressionError(self.text, failure.reason) from None
        except ArithmeticError as exc:
            raise ExpressionError(self.text, _arithmetic_reason(exc)) from None
        if not -MAX_AMOUNT <= result <= MAX_AMOUNT:
            raise ExpressionError(
                self.text, f"the result {result:f} is beyond ±{MAX_AMOUNT}"
            )
        return result


def _arithmetic_reason(exc: ArithmeticError) -> str:
    if isinstance(exc, ZeroDivisionError):
        return "division by zero"
    if isinstance(exc, OverflowError) or "Overflow" in type(exc).__name__:
        return "an intermediate result is beyond 1E+60"
    return f"invalid arithmetic ({type(exc).__name__})"


def compile_expression(
    text: str, where: str, *, variables: Collection[str] = METRIC_VARIABLES
) -> Expression:
    """Check an expression against the allow-list and the bounds, and
    compile it.

    :param text: the expression, as the book writes it
    :param where: where it sits in the book, for the error (``models.gpt-4o``)
    :param variables: the names it may read (defaults to bursar's metrics)
    :raise PricingConfigError: naming the expression and the position of
        the first thing refused
    """
    if not isinstance(text, str):
        raise PricingConfigError(
            f"an expression must be a string, not {type(text).__name__}",
            where=where,
        )
    if len(text) > TEXT_MAX:
        # Named by its start: the error must stay small whatever the text.
        line = text.count("\n", 0, TEXT_MAX) + 1
        column = TEXT_MAX - text.rfind("\n", 0, TEXT_MAX)
        raise PricingConfigError(
            f"the expression has {len(text)} characters, more than {TEXT_MAX}",
            expression=text[:80] + "...",
            position=f"{line}:{column}",
            where=where,
        )
    source = _Source(text, where)
    body = text.strip()
    if not body:
        source.fail_at(1, 0, "empty expression")
    _scan(body, source)
    parsed, if_calls = _rewrite_if_calls(body)
    tree = source.parse(parsed)
    _check_shape(tree, source)
    compiler = Compiler(parsed, variables, _IF_NAME, if_calls, source.fail)
    run = compiler.compile(tree)
    return Expression(text, where, frozenset(compiler.used), run)


class _Source:
    """The text of one expression, and its errors with positions in it."""

    def __init__(self, text: str, where: str) -> None:
        self.text = text
        self.where = where
        # The parser sees the text stripped: positions shift back by this.
        lead = text[: len(text) - len(text.lstrip())]
        self.line_shift = lead.count("\n")
        self.column_shift = len(lead) - (lead.rfind("\n") + 1)
        self.lines = text.strip().split("\n")

    def fail_at(self, line: int, column: int, reason: str) -> NoReturn:
        """Raise for a 1-based line and a 0-based column of the stripped text."""
        if line == 1:
            column += self.column_shift
        position = f"{line + self.line_shift}:{column + 1}"
        raise PricingConfigError(
            reason, expression=self.text, position=position, where=self.where
        )

    def fail(self, node: ast.AST, reason: str) -> NoReturn:
        line = getattr(node, "lineno", 1)
        offset = getattr(node, "col_offset", 0)
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        # The tree counts columns in UTF-8 bytes; the error counts characters.
        column = len(text.encode()[:offset].decode(errors="ignore"))
        self.fail_at(line, column, reason)

    def fail_offset(self, offset: int, reason: str) -> NoReturn:
        """Raise for an offset into the stripped text."""
        body = "\n".join(self.lines)
        line = body.count("\n", 0, offset) + 1
        column = offset - (body.rfind("\n", 0, offset) + 1)
        self.fail_at(line, column, reason)

    def parse(self, parsed: str) -> ast.Expression:
        try:
            return ast.parse(parsed, mode="eval")
        except SyntaxError as exc:
            self.fail_at(
                exc.lineno or 1, max((exc.offset or 1) - 1, 0), f"syntax: {exc.msg}"
            )
        except (ValueError, RecursionError, MemoryError) as exc:
            self.fail_at(1, 0, f"cannot be parsed: {type(exc).__name__}")


def _scan(body: str, source: _Source) -> None:
    """Refuse text whose parsing alone could recurse deeply (bounds above)."""
    depth = run = right = tokens = 0
    for match in _TOKEN.finditer(body):
        token = match.group()
        tokens += 1
        if tokens > TOKENS_MAX:
            source.fail_offset(match.start(), f"more than {TOKENS_MAX} tokens")
        if token in _OPENING:
            depth += 1
            if depth > BRACKETS_MAX:
                source.fail_offset(
                    match.start(), f"brackets nested more than {BRACKETS_MAX} deep"
                )
        elif token in _CLOSING:
            depth -= 1
        if token in _PREFIX:
            run += 1
            if run > PREFIX_RUN_MAX:
                source.fail_offset(
                    match.start(), f"more than {PREFIX_RUN_MAX} prefix operators"
                )
        else:
            run = 0
        if token in _RIGHT_NESTING:
            right += 1
            if right > RIGHT_NESTING_MAX:
                source.fail_offset(
                    match.start(), f"more than {RIGHT_NESTING_MAX} if/lambda/**"
                )


def _rewrite_if_calls(body: str) -> tuple[str, frozenset[tuple[int, int]]]:
    """Rename each ``if(`` that is a call, and say where they are.

    An ``if`` right after a value (a name, a number, ``)``) is a conditional
    expression's (``x if (c) else y``), left alone; otherwise it is bursar's
    function.

    :return: the text to parse, and the (line, byte column) of each call
    """
    if "if" not in body:
        return body, frozenset()
    chars = list(body)
    found: set[tuple[int, int]] = set()
    for match in _IF_CALL.finditer(body):
        start = match.start()
        end = len(body[:start].rstrip())
        begin = end
        while begin > 0 and (body[begin - 1].isalnum() or body[begin - 1] == "_"):
            begin -= 1
        word = body[begin:end]
        if word:
            if not keyword.iskeyword(word) or word in _VALUE_WORDS:
                continue
        elif end and body[end - 1] in ")]}\"'":
            continue
        chars[start : start + 2] = _IF_NAME
        line = body.count("\n", 0, start) + 1
        line_start = body.rfind("\n", 0, start) + 1
        found.add((line, len(body[line_start:start].encode())))
    return "".join(chars), frozenset(found)


def _check_shape(tree: ast.AST, source: _Source) -> None:
    """Refuse a tree with too many nodes or too deep, without recursing."""
    count = 0
    stack: list[tuple[ast.AST, int]] = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > NODES_MAX:
            source.fail(node, f"more than {NODES_MAX} syntax nodes")
        if depth > DEPTH_MAX:
            source.fail(node, f"nested more than {DEPTH_MAX} levels deep")
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.expr):
                stack.append((child, depth + 1))
            else:
                stack.append((child, depth))
