"""What a call used, and what it cost: the price book's input and output.

:class:`UsageMetrics` carries the counters bursar's ``UsageMetrics`` has
(same names), checked when made: each a non-negative ``int`` (never a
``bool``) no larger than a Postgres ``BIGINT``, so every counter fits the
ledger's token columns. :class:`CostBreakdown` is the price per dimension,
in exact ``Decimal``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType

from spendgate.errors import InvalidArgumentError
from spendgate.pricing.functions import CONTEXT

__all__ = ["MAX_COUNT", "CostBreakdown", "ToolCall", "UsageMetrics"]

#: the largest counter accepted (a Postgres BIGINT, the ledger's token columns)
MAX_COUNT = 2**63 - 1
#: the longest tool name accepted
MAX_TOOL_NAME = 256

_ZERO = Decimal(0)

#: the usage counters, as UsageMetrics names them (each a non-negative int)
COUNTERS = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "search_queries",
    "search_results",
    "web_search_calls",
    "code_exec_calls",
)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool invocation; the price book prices it by ``name``.

    :param name: the tool's name, as the price book's ``tools`` keys it
    """

    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise InvalidArgumentError(
                f"a tool name must be a str, not {type(self.name).__name__}"
            )
        if not 0 < len(self.name) <= MAX_TOOL_NAME:
            raise InvalidArgumentError(
                f"a tool name must have 1 to {MAX_TOOL_NAME} characters"
            )


@dataclass(frozen=True, slots=True)
class UsageMetrics:
    """The usage of one call (or of several steps summed), priced by a book.

    :param model: the model's name, looked up in the book's ``models``
        (``None``: the book's ``_default``)
    :param tool_calls: one :class:`ToolCall` per invocation; a list is
        accepted and kept as a tuple
    :raise InvalidArgumentError: for a counter that is not a non-negative
        ``int`` up to :data:`MAX_COUNT`, or a tool call that is not a
        :class:`ToolCall`
    """

    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    tool_calls: tuple[ToolCall, ...] = ()
    search_queries: int = 0
    search_results: int = 0
    web_search_calls: int = 0
    code_exec_calls: int = 0

    def __post_init__(self) -> None:
        if self.model is not None and not isinstance(self.model, str):
            raise InvalidArgumentError(
                f"model must be a str or None, not {type(self.model).__name__}"
            )
        for name in COUNTERS:
            _check_count(name, getattr(self, name))
        calls = self.tool_calls
        if not isinstance(calls, tuple):
            if not isinstance(calls, list):
                raise InvalidArgumentError(
                    "tool_calls must be a list or tuple of ToolCall, not "
                    f"{type(calls).__name__}"
                )
            calls = tuple(calls)
            object.__setattr__(self, "tool_calls", calls)
        for call in calls:
            if not isinstance(call, ToolCall):
                raise InvalidArgumentError(
                    f"tool_calls holds a {type(call).__name__}, not a ToolCall"
                )


def _check_count(name: str, value: object) -> None:
    if value.__class__ is not int:
        # bool is an int subclass, and True tokens is a bug, not a count
        raise InvalidArgumentError(f"{name} must be an int, not {type(value).__name__}")
    if not 0 <= value <= MAX_COUNT:
        raise InvalidArgumentError(f"{name} must be between 0 and {MAX_COUNT}")


@dataclass(frozen=True, slots=True)
class CostBreakdown:
    """The price of one usage, per dimension, in exact ``Decimal``.

    ``tools`` is the sum of ``tools_by_name`` (a tool the book does not name
    is priced, with the others it does not name, under ``"_default"``), and
    ``total`` is the sum of the five dimensions, clamped at zero as bursar
    does: a cache discount larger than the rest makes the charge free, never
    a credit. The dimensions themselves are kept as priced (``cache`` is
    usually negative). Nothing is rounded here; a charge rounds the total up
    to the micro-unit once, at the ledger.

    :raise InvalidArgumentError: when a field is not a finite ``Decimal`` or
        the sums above do not hold
    """

    total: Decimal
    model: Decimal
    tools: Decimal
    search: Decimal
    cache: Decimal
    fixed: Decimal
    tools_by_name: Mapping[str, Decimal] = field(default_factory=dict)

    def __post_init__(self) -> None:
        by_name = MappingProxyType(dict(self.tools_by_name))
        object.__setattr__(self, "tools_by_name", by_name)
        for name in ("total", "model", "tools", "search", "cache", "fixed"):
            _check_decimal(name, getattr(self, name))
        for tool, cost in by_name.items():
            _check_decimal(f"tools_by_name[{tool!r}]", cost)
        if _sum(by_name.values()) != self.tools:
            raise InvalidArgumentError("tools must be the sum of tools_by_name")
        parts = (self.model, self.tools, self.search, self.cache, self.fixed)
        if self.total != max(_ZERO, _sum(parts)):
            raise InvalidArgumentError(
                "total must be the sum of the dimensions, clamped at zero"
            )

    @classmethod
    def from_parts(
        cls,
        *,
        model: Decimal = _ZERO,
        tools_by_name: Mapping[str, Decimal] | None = None,
        search: Decimal = _ZERO,
        cache: Decimal = _ZERO,
        fixed: Decimal = _ZERO,
    ) -> CostBreakdown:
        """A breakdown whose ``tools`` and ``total`` are summed from the parts."""
        by_name = dict(tools_by_name or {})
        tools = _sum(by_name.values())
        total = max(_ZERO, _sum((model, tools, search, cache, fixed)))
        return cls(total, model, tools, search, cache, fixed, by_name)

    def to_dict(self) -> dict[str, object]:
        """The breakdown as JSON-able data (amounts as exact decimal strings),
        for a ledger entry's metadata."""
        return {
            "total": _text(self.total),
            "model": _text(self.model),
            "tools": _text(self.tools),
            "search": _text(self.search),
            "cache": _text(self.cache),
            "fixed": _text(self.fixed),
            "tools_by_name": {k: _text(v) for k, v in self.tools_by_name.items()},
        }


_FIELDS = ("total", "model", "tools", "search", "cache", "fixed", "tools_by_name")
# The slots' own setters: they bypass the frozen dataclass's __setattr__,
# as object.__setattr__ does, without looking each field up by name.
_SET = tuple(getattr(CostBreakdown, name).__set__ for name in _FIELDS)
_SET_TOTAL, _SET_MODEL, _SET_TOOLS, _SET_SEARCH, _SET_CACHE, _SET_FIXED, _SET_BY = _SET
_NEW = object.__new__


def priced(
    total: Decimal,
    model: Decimal,
    tools: Decimal,
    search: Decimal,
    cache: Decimal,
    fixed: Decimal,
    tools_by_name: Mapping[str, Decimal],
) -> CostBreakdown:
    """A :class:`CostBreakdown` of the fields in order, unchecked: for the
    engine, whose sums hold by construction (the checks cost a third of a
    pricing)."""
    breakdown: CostBreakdown = _NEW(CostBreakdown)
    _SET_TOTAL(breakdown, total)
    _SET_MODEL(breakdown, model)
    _SET_TOOLS(breakdown, tools)
    _SET_SEARCH(breakdown, search)
    _SET_CACHE(breakdown, cache)
    _SET_FIXED(breakdown, fixed)
    _SET_BY(breakdown, tools_by_name)
    return breakdown


def _sum(values: Iterable[Decimal]) -> Decimal:
    # In the expressions' context: the caller's may round to 28 digits.
    total = _ZERO
    for value in values:
        total = CONTEXT.add(total, value)
    return total


def _check_decimal(name: str, value: object) -> None:
    if not isinstance(value, Decimal) or not value.is_finite():
        raise InvalidArgumentError(f"{name} must be a finite Decimal")


def _text(value: Decimal) -> str:
    # Fixed-point, never "1E+1": the ledger's readers parse it as NUMERIC.
    return format(value, "f")


def tool_counts(calls: Iterable[ToolCall]) -> dict[str, int]:
    """Calls per tool name, in the order each name first appears."""
    counts: dict[str, int] = {}
    for call in calls:
        counts[call.name] = counts.get(call.name, 0) + 1
    return counts
