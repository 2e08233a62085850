"""What the LiteLLM callback tests share (tests/test_integrations_litellm.py,
tests/test_integrations_litellm_pricing.py, tests/test_litellm_streaming.py):
``MESSAGES``, the prompt; ``Recorder``,
a ``CustomLogger`` that keeps what LiteLLM reported (usage, its own
``response_cost``) to compare the charges with, and its ``recorder`` fixture;
the autouse ``_restore_litellm_callbacks`` fixture, which puts LiteLLM's
global callback lists back after each test; ``install``, which sets our
callback and the recorder as LiteLLM's callbacks; ``exact``, what the ledger
holds for an exact cost."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import litellm
import pytest
from litellm.integrations.custom_logger import CustomLogger

from spendgate.core.money import charge_micros, from_micros
from spendgate.integrations.litellm import SpendgateCallback

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


class Recorder(CustomLogger):  # type: ignore[misc]
    """Keeps what LiteLLM hands its callbacks, to compare our charges with."""

    def __init__(self) -> None:
        super().__init__()
        self.successes: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []

    async def async_log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        response = kwargs.get("complete_streaming_response") or response_obj
        self.successes.append(
            {
                "call_id": kwargs.get("litellm_call_id"),
                "usage": response.usage,
                "response_cost": kwargs.get("response_cost"),
            }
        )

    async def async_log_failure_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self.failures.append(
            {
                "call_id": kwargs.get("litellm_call_id"),
                "exception": kwargs.get("exception"),
            }
        )


_CALLBACK_LISTS = (
    "callbacks",
    "input_callback",
    "success_callback",
    "failure_callback",
    "_async_success_callback",
    "_async_failure_callback",
)


@pytest.fixture(autouse=True)
def _restore_litellm_callbacks() -> Iterator[None]:
    # LiteLLM copies litellm.callbacks into its other (global) callback lists
    # on each call: all of them must be put back, or one test's callback
    # would keep receiving the next test's events.
    saved = {name: list(getattr(litellm, name)) for name in _CALLBACK_LISTS}
    yield
    for name, value in saved.items():
        setattr(litellm, name, value)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def install(callback: SpendgateCallback, recorder: Recorder) -> None:
    litellm.callbacks = [callback, recorder]


def exact(micros_of: Decimal) -> Decimal:
    """What the ledger holds for an exact cost: rounded up to the micro-unit."""
    return from_micros(charge_micros(micros_of))
