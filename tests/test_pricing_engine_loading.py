"""Loading a price book: what bursar refuses is refused, quickly, naming
the place; every key bursar knows is accepted; files are read as JSON or
YAML.

How: books bursar refuses (missing or empty sections, unknown keys, bad
versions, expressions that do not compile, out-of-range numbers, invalid
plans, tiers and subscriptions) must each be a ``PricingConfigError``
whose ``where`` names the offending place; a book with every bursar
top-level key loads; an expression error names the expression and its
position; hostile documents (deep nesting, alias bombs, oversize,
non-finite numbers, bad encodings, YAML tags) are refused within two
seconds; ``from_file`` reads a book by its extension, then by its content,
and refuses a missing or oversized file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from pricing_helpers import BASIC_JSON, BASIC_YAML
from spendgate.errors import PricingConfigError
from spendgate.pricing import PricingEngine

# -- books that do not load ---------------------------------------------------

#: what a hostile document may take to be refused: a blowup (an alias bomb
#: expanded, a hundred-million-digit number) never finishes, so this only
#: tells one apart from a busy machine, never a speed target
BLOWUP_SECONDS = 20


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
    assert time.perf_counter() - started < BLOWUP_SECONDS


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
    assert time.perf_counter() - started < BLOWUP_SECONDS


@pytest.mark.parametrize("number", ["1.0e+99999999", "1.0e-99999999", "0.0e-99999999"])
@pytest.mark.parametrize(
    "place",
    [
        '"min_balance": {}',
        '"fixed": {{"job": {}}}',
        '"plans": {{"p": {{"id": "p", "name": "P", "features": {{"x": {}}}}}}}',
    ],
)
def test_a_number_of_a_huge_exponent_is_refused_as_a_book_fault(
    number: str, place: str
) -> None:
    """A book's numbers are bounded as its expressions' literals are: a few
    bytes of exponent must neither escape as decimal.Overflow nor become a
    config (and a stored version) of a hundred million digits."""
    text = '{"models": {"_default": "1"}, ' + place.format(number) + "}"
    started = time.perf_counter()
    for load in (PricingEngine.from_json, PricingEngine.from_yaml):
        with pytest.raises(PricingConfigError, match="exponent"):
            load(text)
    for value in (1e-40, number):  # (a float, and an amount written as text)
        with pytest.raises(PricingConfigError, match="exponent"):
            PricingEngine.from_dict({"models": {"_default": "1"}, "min_balance": value})
    assert time.perf_counter() - started < BLOWUP_SECONDS


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
