"""``PricingEngine``: a bursar price book, loaded once, pricing usage exactly.

A bursar (or ducto) book loads unchanged, JSON or YAML::

    version: 1                       # optional; 1 is the only version
    models:                          # required: model name -> expression
      gpt-4o: input_tokens * 0.0000025 + output_tokens * 0.00001
      _default: input_tokens * 0.000001 + output_tokens * 0.000003
    tools: {web_search: this_tool_calls * 0.01, _default: tool_calls * 0}
    search: {costs: search_queries * 0.005}   # or the expression alone
    cache: {discount: -cache_read_tokens * 0.0000012}   # likewise
    fixed: {batch_job: 20}           # job -> amount, for calculate_fixed
    min_balance: 5
    plans: {...}                     # and bursar's tiers, signup_bonus,
                                     # subscriptions, credit_topups (kept)

Pricing, as bursar 0.0.1 prices:

- ``model``: the usage's model's expression, else ``_default`` (a plan's
  ``rate_overrides`` first, the same way); neither is ``UnknownModelError``.
- ``tools``: each tool the book names is priced once with
  ``this_tool_calls`` = its calls; the calls of every other tool together
  are priced once by ``_default`` (none: free). ``tool_calls`` is the count
  of *all* calls everywhere, in ``tools`` expressions too.
- ``search`` and ``cache``: evaluated for every usage when present.
- ``total``: the sum, clamped at zero (a cache discount never pays out).
  No rounding: a charge rounds up to the micro-unit once, at the ledger,
  where bursar rounds half-up to 4 places.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any, final

from spendgate.core.money import MAX_AMOUNT
from spendgate.errors import ExpressionError, InvalidArgumentError, UnknownModelError
from spendgate.errors.arguments import shown
from spendgate.pricing import book
from spendgate.pricing.book import amount, fail, mapping
from spendgate.pricing.expressions import (
    TOOL_VARIABLES,
    Expression,
    compile_expression,
)
from spendgate.pricing.functions import CONTEXT
from spendgate.pricing.plans import check_other, check_plans, check_tiers
from spendgate.pricing.usage import CostBreakdown, UsageMetrics, priced

__all__ = ["DEFAULT", "TOP_LEVEL_KEYS", "PricingEngine"]

#: the key of the fallback entry in ``models``, ``tools`` and rate overrides
DEFAULT = "_default"
#: the top-level keys of a bursar book; any other is refused
TOP_LEVEL_KEYS = (
    "version",
    "models",
    "tools",
    "search",
    "cache",
    "min_balance",
    "signup_bonus",
    "fixed",
    "plans",
    "tiers",
    "subscriptions",
    "credit_topups",
)

_ZERO = Decimal(0)
_NO_TOOLS: Mapping[str, Decimal] = MappingProxyType({})
_ADD = CONTEXT.add
# Counters are mostly small: their Decimals are made once.
_SMALL = tuple(Decimal(n) for n in range(1024))


def _number(n: int) -> Decimal:
    return _SMALL[n] if n < 1024 else Decimal(n)


@final
class PricingEngine:
    """A loaded, checked price book. Immutable; share it between threads.

    Make one with :meth:`from_dict`, :meth:`from_json`, :meth:`from_yaml` or
    :meth:`from_file`; each raises ``PricingConfigError`` for a book that
    does not load, naming the place in it (and, for an expression, the
    expression and the position of the fault).
    """

    __slots__ = (
        "_cache",
        "_config",
        "_fixed",
        "_min_balance",
        "_models",
        "_plan_rates",
        "_plans",
        "_search",
        "_tool_default",
        "_tools",
    )

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        data = mapping(book.plain(cfg), "")
        for key in data:
            if key not in TOP_LEVEL_KEYS:
                known = ", ".join(TOP_LEVEL_KEYS)
                fail(key, f"unknown key (a price book has: {known})")
        version = data.setdefault("version", 1)
        if version.__class__ is not int or version != 1:
            fail("version", f"must be 1, not {version!r}")
        self._models = _expressions(data.get("models"), "models", required=True)
        tools = _expressions(data.get("tools"), "tools", variables=TOOL_VARIABLES)
        self._tool_default = tools.pop(DEFAULT, None)
        self._tools = tools
        self._search = _section(data.get("search"), "search", "costs")
        self._cache = _section(data.get("cache"), "cache", "discount")
        self._fixed = {
            book.name(job, "fixed"): amount(value, f"fixed.{job}")
            for job, value in mapping(data.get("fixed") or {}, "fixed").items()
        }
        balance = data.get("min_balance")
        self._min_balance = None if balance is None else amount(balance, "min_balance")
        plans, rates = check_plans(data["plans"]) if data.get("plans") else ({}, {})
        self._plans: Mapping[str, Mapping[str, Any]] = _frozen(book.jsonable(plans))
        self._plan_rates = {k: MappingProxyType(v) for k, v in rates.items()}
        if data.get("tiers") is not None:
            check_tiers(data["tiers"])
        check_other(data)
        self._config: dict[str, Any] = book.jsonable(data)

    # -- loading ------------------------------------------------------------

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> PricingEngine:
        """Load a book given as data (as ``json.load`` or ``yaml.safe_load``
        give it; floats are read through their shortest repr)."""
        return cls(cfg)

    @classmethod
    def from_json(cls, text: str | bytes) -> PricingEngine:
        """Load a book written in JSON."""
        return cls(mapping(book.from_json_text(text), ""))

    @classmethod
    def from_yaml(cls, text: str | bytes) -> PricingEngine:
        """Load a book written in YAML (PyYAML's safe loader)."""
        return cls(mapping(book.from_yaml_text(text), ""))

    @classmethod
    def from_file(cls, path: str | Path) -> PricingEngine:
        """Load a book file: ``.json`` is JSON, ``.yaml``/``.yml`` YAML, any
        other is JSON when it starts with ``{``, else YAML."""
        text, is_json = book.read_file(path)
        return cls.from_json(text) if is_json else cls.from_yaml(text)

    # -- what the book holds ------------------------------------------------

    @property
    def config(self) -> dict[str, Any]:
        """The book as JSON-able data (a fresh copy): as written, with
        ``version`` filled in and numbers exact (an ``int`` when whole, else
        a decimal string). Loading it again gives the same engine."""
        return copy.deepcopy(self._config)

    @property
    def min_balance(self) -> Decimal | None:
        """The balance a charge must leave (``None``: the book sets none)."""
        return self._min_balance

    @property
    def plans(self) -> Mapping[str, Mapping[str, Any]]:
        """The book's ``plans``, checked, as written (read-only)."""
        return self._plans

    def rate_overrides(self, plan_id: str) -> Mapping[str, Expression]:
        """A plan's ``rate_overrides``, compiled, for :meth:`calculate`
        (empty for a plan without any or not in the book)."""
        return self._plan_rates.get(plan_id, MappingProxyType({}))

    def has_model(self, name: str) -> bool:
        """Whether ``models`` names this model itself (``_default`` aside)."""
        return name != DEFAULT and name in self._models

    @property
    def has_default_model(self) -> bool:
        """Whether ``models`` has a ``_default`` that prices any model."""
        return DEFAULT in self._models

    # -- pricing ------------------------------------------------------------

    def calculate(
        self,
        usage: UsageMetrics,
        *,
        rate_overrides: Mapping[str, Expression] | None = None,
    ) -> CostBreakdown:
        """Price one usage.

        :param rate_overrides: model expressions that come first (a plan's,
            see :meth:`rate_overrides`): the model's, else their
            ``_default``, before the book's
        :raise UnknownModelError: when neither names the model and neither
            has a ``_default``
        :raise ExpressionError: division by zero or a result out of range
            in an expression, or a total above ``MAX_AMOUNT``
        """
        env = {
            "input_tokens": _number(usage.input_tokens),
            "output_tokens": _number(usage.output_tokens),
            "cache_read_tokens": _number(usage.cache_read_tokens),
            "cache_write_tokens": _number(usage.cache_write_tokens),
            "tool_calls": _number(len(usage.tool_calls)),
            "search_queries": _number(usage.search_queries),
            "search_results": _number(usage.search_results),
            "web_search_calls": _number(usage.web_search_calls),
            "code_exec_calls": _number(usage.code_exec_calls),
        }
        model = self._model(usage.model, rate_overrides).evaluate_decimals(env)
        search = self._search.evaluate_decimals(env) if self._search else _ZERO
        cache = self._cache.evaluate_decimals(env) if self._cache else _ZERO
        tools = _ZERO
        if usage.tool_calls:
            by_name = self._price_tools(usage, env)
            for cost in by_name.values():
                tools = _ADD(tools, cost)
            by_name_view: Mapping[str, Decimal] = MappingProxyType(by_name)
        else:
            by_name_view = _NO_TOOLS
        total = _ADD(_ADD(_ADD(model, tools), search), cache)
        if not total > _ZERO:  # (max(0, total): a zero total stays the 0 given)
            total = _ZERO
        elif total > MAX_AMOUNT:
            raise ExpressionError(
                "(the total)", f"{total:f} is above the largest charge, {MAX_AMOUNT}"
            )
        return priced(total, model, tools, search, cache, _ZERO, by_name_view)

    def calculate_fixed(self, job: str) -> CostBreakdown:
        """The price of a fixed-cost job from the book's ``fixed``.

        :raise InvalidArgumentError: for a job the book does not price
            (bursar refuses it too, rather than charging nothing)
        """
        price = self._fixed.get(job)
        if price is None:
            raise InvalidArgumentError(
                f"the price book has no fixed price for {shown(job)}"
            )
        return priced(price, _ZERO, _ZERO, _ZERO, _ZERO, price, _NO_TOOLS)

    def _model(
        self, name: str | None, overrides: Mapping[str, Expression] | None
    ) -> Expression:
        key = DEFAULT if name is None else name
        if overrides:
            found = overrides.get(key) or overrides.get(DEFAULT)
            if found is not None:
                return found
        found = self._models.get(key) or self._models.get(DEFAULT)
        if found is None:
            raise UnknownModelError(
                str(name), "not in the price book, which has no _default"
            )
        return found

    def _price_tools(
        self, usage: UsageMetrics, env: dict[str, Decimal]
    ) -> dict[str, Decimal]:
        counts: dict[str, int] = {}
        for call in usage.tool_calls:
            counts[call.name] = counts.get(call.name, 0) + 1
        priced: dict[str, Decimal] = {}
        others = 0
        for name, count in counts.items():
            expression = self._tools.get(name)
            if expression is None:
                others += count
                continue
            env["this_tool_calls"] = _number(count)
            priced[name] = expression.evaluate_decimals(env)
        if others and self._tool_default is not None:
            env["this_tool_calls"] = _number(others)
            priced[DEFAULT] = self._tool_default.evaluate_decimals(env)
        return priced


def _frozen(value: Any) -> Any:
    # Read-only all the way down: an engine is shared between threads.
    if isinstance(value, dict):
        return MappingProxyType({key: _frozen(item) for key, item in value.items()})
    if isinstance(value, list):
        return tuple(_frozen(item) for item in value)
    return value


def _expressions(
    value: object,
    where: str,
    *,
    required: bool = False,
    variables: frozenset[str] | None = None,
) -> dict[str, Expression]:
    if value is None and not required:
        return {}
    section = mapping(value, where)
    if required and not section:
        fail(where, "must name at least one model (or _default)")
    kwargs = {} if variables is None else {"variables": variables}
    return {
        key: compile_expression(text, f"{where}.{book.name(key, where)}", **kwargs)
        for key, text in section.items()
    }


def _section(value: object, where: str, key: str) -> Expression | None:
    # bursar's code takes the expression itself; its README writes it under
    # one key ({"costs": ...}, {"discount": ...}): both load.
    if value is None:
        return None
    if isinstance(value, dict):
        for extra in value:
            if extra != key:
                fail(f"{where}.{extra}", f"unknown key (only {key})")
        if key not in value:
            fail(where, f"needs {key}: <expression>")
        return compile_expression(value[key], f"{where}.{key}")
    return compile_expression(value, where)  # type: ignore[arg-type]
