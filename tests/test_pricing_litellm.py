"""Pricing agrees with LiteLLM's own costs, offline, and is imported lazily.

How: agreement with LiteLLM is checked by calling its ``cost_per_token`` on
a deterministic sample of the bundled cost map and requiring LiteLLM's float
to equal ``float(ours)`` within float noise (``rel_tol=1e-12``: see the
module docstring of ``spendgate.pricing.catalog`` for why that, and not rounding
both, is what "agree" means), with every network connection blocked; gpt-4o
is checked to the last digit, and models with off-peak prices are charged
the standard rate, never less than LiteLLM charges. Lazy, offline import of
the bundled cost map is checked in a fresh interpreter. The formula itself,
overrides, defaults and errors are tests/test_pricing.py's.
"""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import LITELLM_WARNINGS
from pricing_helpers import D
from spendgate.pricing import Pricing

pytestmark = LITELLM_WARNINGS


# -- against LiteLLM itself ----------------------------------------------------


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Every connection attempt away from this machine fails and is recorded."""
    attempts: list[object] = []
    real_connect = socket.socket.connect

    def guarded_connect(self: socket.socket, address: Any) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "::1", "localhost"):
            attempts.append(address)
            raise OSError("network blocked in tests")
        real_connect(self, address)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        attempts.append(host)
        raise socket.gaierror("network blocked in tests")

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    yield attempts


# Providers whose LiteLLM cost path logs in first (device-code auth, a local
# server): they would try the network, so they are left out of the sample.
_NETWORKED_PROVIDERS = {"github_copilot", "lemonade"}


def _sample(model_cost: dict[str, Any], size: int) -> list[str]:
    eligible = sorted(
        key
        for key, entry in model_cost.items()
        if isinstance(entry, dict)
        and entry.get("mode") == "chat"
        and entry.get("input_cost_per_token") is not None
        and entry.get("output_cost_per_token") is not None
        # Off-peak discounts depend on the hour; spendgate charges the
        # standard rate (see test_off_peak_models_are_charged_the_standard_rate).
        and entry.get("off_peak_pricing") is None
        and entry.get("litellm_provider") not in _NETWORKED_PROVIDERS
    )
    step = max(1, len(eligible) // size)
    return eligible[::step]


@pytest.mark.slow
def test_agrees_with_litellm_cost_per_token_over_a_sample(
    no_network: list[object],
) -> None:
    import litellm
    from litellm.types.utils import PromptTokensDetailsWrapper, Usage

    pricing = Pricing()
    models = _sample(litellm.model_cost, 400)
    compared = 0
    disagreements = []
    # plain; past the common long-context thresholds (200k, 272k); cached input
    cases = [(1234, 567, 0), (272_001, 100, 0), (1000, 300, 400)]
    for model in models:
        for prompt, completion, cached in cases:
            ours = pricing.calculate(
                model, prompt, completion, cached_input_tokens=cached
            )
            usage = Usage(
                prompt_tokens=prompt,
                completion_tokens=completion,
                total_tokens=prompt + completion,
                prompt_tokens_details=PromptTokensDetailsWrapper(cached_tokens=cached),
            )
            try:
                input_cost, output_cost = litellm.cost_per_token(
                    model=model,
                    prompt_tokens=prompt,
                    completion_tokens=completion,
                    usage_object=usage,
                )
            except Exception:
                # LiteLLM cannot price this key itself (e.g. no provider it
                # recognises in the name): there is nothing to agree with.
                continue
            compared += 1
            theirs = input_cost + output_cost
            if not math.isclose(float(ours), theirs, rel_tol=1e-12, abs_tol=1e-18):
                disagreements.append((model, prompt, completion, cached, ours, theirs))
    assert no_network == []
    assert compared >= 600
    assert disagreements == []


def test_gpt_4o_matches_litellm_to_the_last_digit() -> None:
    import litellm

    ours = Pricing().calculate("gpt-4o", 1000, 500)
    assert ours == D("0.0075")  # 1000 * 2.5e-06 + 500 * 1e-05
    input_cost, output_cost = litellm.cost_per_token(
        model="gpt-4o", prompt_tokens=1000, completion_tokens=500
    )
    assert math.isclose(float(ours), input_cost + output_cost, rel_tol=1e-12)


def test_off_peak_models_are_charged_the_standard_rate() -> None:
    import litellm

    off_peak = sorted(
        key
        for key, entry in litellm.model_cost.items()
        if isinstance(entry, dict)
        and entry.get("off_peak_pricing") is not None
        and entry.get("input_cost_per_token") is not None
    )
    pricing = Pricing()
    checked = 0
    for model in off_peak:
        try:
            input_cost, output_cost = litellm.cost_per_token(
                model=model, prompt_tokens=1000, completion_tokens=1000
            )
        except Exception:
            continue  # LiteLLM cannot price this key by itself
        price = pricing.price(model)
        assert price.has_off_peak_pricing
        entry = litellm.model_cost[model]
        assert price.input_cost_per_token == D(repr(entry["input_cost_per_token"]))
        # Never below what LiteLLM charges, at any hour.
        ours = pricing.calculate(model, 1000, 1000)
        assert float(ours) >= input_cost + output_cost
        checked += 1
    if not checked:
        pytest.skip("this LiteLLM's cost map has no off-peak prices it can apply")


# -- lazy and offline -----------------------------------------------------------


def test_import_is_lazy_and_the_cost_map_is_the_bundled_one() -> None:
    script = """
import os, sys
from decimal import Decimal
import spendgate
heavy = [m for m in ("litellm", "fastapi", "starlette", "asyncpg") if m in sys.modules]
assert heavy == [], heavy
import spendgate.integrations.asgi  # pure ASGI: no framework import either
heavy = [m for m in ("litellm", "fastapi", "starlette", "asyncpg") if m in sys.modules]
assert heavy == [], heavy
from spendgate.pricing import Pricing
pricing = Pricing()
assert "litellm" not in sys.modules
cost = pricing.calculate("gpt-4o", 1000, 500)
assert cost == Decimal("0.0075"), cost
assert os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] == "True"
from litellm.litellm_core_utils.get_model_cost_map import get_model_cost_map_source_info
info = get_model_cost_map_source_info()
assert info["source"] == "local", info
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LITELLM_")}
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")
