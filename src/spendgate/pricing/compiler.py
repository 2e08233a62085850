"""Turn a parsed, allow-listed expression into nested closures, once.

Every node type is checked against the allow-list here, as it is compiled:
a node this module has no rule for is refused with its position, so what
is not named below can never run. The closures take the variables as a
``dict[str, Decimal]`` and do nothing but ``Decimal`` arithmetic in
:data:`~spendgate.pricing.functions.CONTEXT`.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Collection
from decimal import Decimal
from typing import Any, NoReturn

from spendgate.pricing.functions import (
    ARITY,
    CONTEXT,
    FUNCTIONS,
    EvaluationFailure,
)

__all__ = ["Compiler", "Fn", "LITERAL_DIGITS_MAX", "LITERAL_EXPONENT_MAX"]

#: what a compiled node is: variables in, a Decimal out
Fn = Callable[[dict[str, Decimal]], Decimal]

#: the most significant digits of a numeric literal
LITERAL_DIGITS_MAX = 30
#: the largest |exponent| of a numeric literal (0.0000025 is 2.5e-6)
LITERAL_EXPONENT_MAX = 30

_ONE = Decimal(1)
_ZERO = Decimal(0)
# A decimal number as Python writes one (no 0x / 0o / 0b, no 1j).
_DECIMAL_LITERAL = re.compile(
    r"(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9][0-9_]*)?"
)

_ARITHMETIC: dict[type[ast.operator], Callable[[Decimal, Decimal], Decimal]] = {
    ast.Add: CONTEXT.add,
    ast.Sub: CONTEXT.subtract,
    ast.Mult: CONTEXT.multiply,
    ast.Div: CONTEXT.divide,
    # Decimal's own // and %: they truncate toward zero, as bursar's do
    ast.FloorDiv: CONTEXT.divide_int,
    ast.Mod: CONTEXT.remainder,
}
_DIVIDING = {ast.Div: "division", ast.FloorDiv: "division", ast.Mod: "modulo"}

_COMPARISONS: dict[type[ast.cmpop], Callable[[Decimal, Decimal], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}

# What each refused construct is called in the error, for the common ones.
_REFUSED = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscripts",
    ast.Lambda: "lambda",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.JoinedStr: "f-strings",
    ast.NamedExpr: "assignment expressions (:=)",
    ast.Starred: "starred arguments",
    ast.Tuple: "tuples (except after `in`)",
    ast.List: "lists (except after `in`)",
    ast.Set: "sets",
    ast.Dict: "dicts",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.Slice: "slices",
}
_OPERATOR_NAMES = {
    ast.Pow: "exponentiation (**)",
    ast.MatMult: "@",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.BitAnd: "&",
    ast.Invert: "~",
    ast.Is: "is",
    ast.IsNot: "is not",
}


class Compiler:
    """Compiles one expression's tree; refuses with ``fail(node, reason)``.

    :param variables: the names the expression may read
    :param if_calls: positions of the ``if`` calls the text had, where the
        tree holds ``if_name`` instead (``if`` is a keyword in Python)
    :param fail: raises the load error for a node (never returns)
    """

    def __init__(
        self,
        source: str,
        variables: Collection[str],
        if_name: str,
        if_calls: Collection[tuple[int, int]],
        fail: Callable[[ast.AST, str], NoReturn],
    ) -> None:
        self.source = source
        self.variables = variables
        self.if_name = if_name
        self.if_calls = if_calls
        self.fail = fail
        self.used: set[str] = set()

    def compile(self, node: ast.AST) -> Fn:
        rule = _RULES.get(type(node))
        if rule is None:
            what = _REFUSED.get(type(node), type(node).__name__)
            self.fail(node, f"{what} not allowed")
        return rule(self, node)

    # -- leaves -----------------------------------------------------------

    def constant(self, node: ast.Constant) -> Fn:
        value = self.literal(node)

        def run(env: dict[str, Decimal]) -> Decimal:
            return value

        return run

    def literal(self, node: ast.Constant) -> Decimal:
        """The exact value of a number as written (never through a float)."""
        value = node.value
        if isinstance(value, bool):
            return _ONE if value else _ZERO
        if not isinstance(value, int | float):
            kinds: dict[type, str] = {str: "strings", bytes: "bytes"}
            kind = kinds.get(type(value), "constants")
            self.fail(node, f"{kind} not allowed (only numbers)")
        text = ast.get_source_segment(self.source, node) or ""
        if len(text) > 64 or not _DECIMAL_LITERAL.fullmatch(text):
            self.fail(node, "only decimal numbers of at most 64 characters")
        try:
            number = Decimal(text.replace("_", ""))
        except ArithmeticError:
            self.fail(node, f"{text} is not a decimal number")
        if number:
            digits = "".join(map(str, number.as_tuple().digits)).strip("0")
            if len(digits) > LITERAL_DIGITS_MAX:
                self.fail(node, f"more than {LITERAL_DIGITS_MAX} significant digits")
            if abs(number.adjusted()) > LITERAL_EXPONENT_MAX:
                self.fail(node, f"exponent beyond ±{LITERAL_EXPONENT_MAX}")
        return number

    def name(self, node: ast.Name) -> Fn:
        name = node.id
        if name not in self.variables:
            if name in ARITY or self.is_if(node):
                self.fail(node, f"{_shown(name)}() is a function: call it")
            known = ", ".join(sorted(self.variables))
            self.fail(node, f"unknown name {name!r} (variables: {known})")
        self.used.add(name)

        def run(env: dict[str, Decimal]) -> Decimal:
            return env[name]

        return run

    def is_if(self, node: ast.Name) -> bool:
        return (
            node.id == self.if_name and (node.lineno, node.col_offset) in self.if_calls
        )

    # -- operators --------------------------------------------------------

    def unary(self, node: ast.UnaryOp) -> Fn:
        operand = self.compile(node.operand)
        op = type(node.op)
        if op is ast.USub:
            minus = CONTEXT.minus
            return lambda env: minus(operand(env))
        if op is ast.UAdd:
            plus = CONTEXT.plus
            return lambda env: plus(operand(env))
        if op is ast.Not:
            return lambda env: _ZERO if operand(env) else _ONE
        self.fail(node, f"{_OPERATOR_NAMES.get(op, op.__name__)} not allowed")

    def binary(self, node: ast.BinOp) -> Fn:
        op = type(node.op)
        apply = _ARITHMETIC.get(op)
        if apply is None:
            self.fail(node, f"{_OPERATOR_NAMES.get(op, op.__name__)} not allowed")
        left = self.compile(node.left)
        right = self.compile(node.right)
        dividing = _DIVIDING.get(op)
        if dividing is not None:
            reason = f"{dividing} by zero"

            def divide(env: dict[str, Decimal]) -> Decimal:
                a = left(env)
                b = right(env)
                if not b:
                    raise EvaluationFailure(reason)
                return apply(a, b)

            return divide
        if isinstance(node.right, ast.Constant):
            # The usual shape, `tokens * 0.001`: one call fewer per evaluation.
            constant = self.literal(node.right)
            if isinstance(node.left, ast.Name):
                var = node.left.id
                return lambda env: apply(env[var], constant)
            return lambda env: apply(left(env), constant)
        return lambda env: apply(left(env), right(env))

    def boolean(self, node: ast.BoolOp) -> Fn:
        # Python's meaning, as bursar's: `a or b` is a if a is not zero, else b.
        parts = [self.compile(value) for value in node.values]
        stop_when_true = isinstance(node.op, ast.Or)

        def run(env: dict[str, Decimal]) -> Decimal:
            value = _ZERO
            for part in parts:
                value = part(env)
                if bool(value) is stop_when_true:
                    return value
            return value

        return run

    def compare(self, node: ast.Compare) -> Fn:
        left_node = node.left
        if isinstance(left_node, ast.UnaryOp) and isinstance(left_node.op, ast.Not):
            # bursar reads `(not a) < b` as `not (a < b)`; so does spendgate.
            inner = ast.Compare(left_node.operand, node.ops, node.comparators)
            test = self.compare(ast.copy_location(inner, node))
            return lambda env: _ZERO if test(env) else _ONE
        if len(node.ops) > 1 and any(
            isinstance(op, ast.In | ast.NotIn) for op in node.ops
        ):
            self.fail(node, "`in` cannot be chained with other comparisons")
        left = self.compile(left_node)
        steps = [
            self.comparison(op, right)
            for op, right in zip(node.ops, node.comparators, strict=True)
        ]

        def run(env: dict[str, Decimal]) -> Decimal:
            a = left(env)
            for test, right in steps:
                b = right(env)
                if not test(a, b):
                    return _ZERO
                a = b
            return _ONE

        return run

    def comparison(
        self, op: ast.cmpop, right: ast.expr
    ) -> tuple[Callable[[Decimal, Decimal], bool], Fn]:
        test = _COMPARISONS.get(type(op))
        if test is not None:
            return test, self.compile(right)
        if not isinstance(op, ast.In | ast.NotIn):
            name = _OPERATOR_NAMES.get(type(op), type(op).__name__)
            self.fail(right, f"{name} not allowed")
        if not isinstance(right, ast.Tuple | ast.List):
            self.fail(right, "`in` needs a tuple or list of numbers on its right")
        members = frozenset(self.member(element) for element in right.elts)
        inside = isinstance(op, ast.In)

        def member_test(a: Decimal, _: Decimal) -> bool:
            return (a in members) is inside

        return member_test, lambda env: _ZERO

    def member(self, node: ast.expr) -> Decimal:
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            if isinstance(node.operand, ast.Constant):
                return self.literal(node.operand).copy_negate()
        if isinstance(node, ast.Constant):
            return self.literal(node)
        self.fail(node, "`in` takes only numbers (a literal tuple or list)")

    # -- choices and calls ------------------------------------------------

    def choice(self, node: ast.IfExp) -> Fn:
        test = self.compile(node.test)
        then = self.compile(node.body)
        other = self.compile(node.orelse)
        return lambda env: then(env) if test(env) else other(env)

    def call(self, node: ast.Call) -> Fn:
        func = node.func
        if not isinstance(func, ast.Name):
            self.fail(node, "only the allowed functions may be called")
        name = "if" if self.is_if(func) else func.id
        if name not in ARITY:
            self.fail(func, f"unknown function {func.id!r} (allowed: {_ALLOWED})")
        if node.keywords:
            self.fail(node.keywords[0], "keyword arguments not allowed")
        low, high = ARITY[name]
        count = len(node.args)
        if not low <= count <= high or (name == "tier" and count % 2):
            self.fail(node, f"{name}() takes {_arity_text(name)}, not {count}")
        args = [self.compile(arg) for arg in node.args]
        if name == "if":
            test, then, other = args
            return lambda env: then(env) if test(env) else other(env)
        return _applied(FUNCTIONS[name], args)


def _applied(fn: Callable[..., Decimal], args: list[Fn]) -> Fn:
    if len(args) == 1:
        (a,) = args
        return lambda env: fn(a(env))
    if len(args) == 2:
        a, b = args
        return lambda env: fn(a(env), b(env))
    return lambda env: fn(*[arg(env) for arg in args])


def _arity_text(name: str) -> str:
    low, high = ARITY[name]
    if name == "tier":
        return f"an even number of arguments, {low} to {high}"
    if low == high:
        return f"{low} argument{'s' if low > 1 else ''}"
    return f"{low} to {high} arguments"


def _shown(name: str) -> str:
    return name if name in ARITY else "if"


_ALLOWED = ", ".join(sorted(ARITY))

_RULES: dict[type[ast.AST], Callable[[Compiler, Any], Fn]] = {
    ast.Expression: lambda c, node: c.compile(node.body),
    ast.Constant: Compiler.constant,
    ast.Name: Compiler.name,
    ast.UnaryOp: Compiler.unary,
    ast.BinOp: Compiler.binary,
    ast.BoolOp: Compiler.boolean,
    ast.Compare: Compiler.compare,
    ast.IfExp: Compiler.choice,
    ast.Call: Compiler.call,
}
