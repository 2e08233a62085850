"""What a coreason-budget user meets on switching: its names and settings work.

Its ``COREASON_BUDGET_*`` variables are read (``MODEL_PRICE_OVERRIDES`` as
JSON, as its settings class reads it), from the environment or its
``.env`` file (ours win when both are set), its
field names can be read back, ``close()``, ``check_availability_sync`` /
``record_spend_sync`` and ``pricing.calculate_cost`` exist, and a refusal's
message keeps its wording ("User daily limit exceeded for ..."); one built
from a message alone, as coreason raises it, is that message.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from redis import Redis as SyncRedis

from conftest import REDIS_URL, MakeBudget, real_redis_available, service_missing
from spendgate import (
    BudgetConfig,
    BudgetExceededError,
    BudgetManager,
    BudgetUnavailableError,
)
from spendgate.config import load_config
from spendgate.errors import ConfigurationError, InvalidArgumentError


@pytest.fixture
def key_prefix_sync() -> Iterator[str]:
    """A key prefix of its own on the real Redis, its keys deleted after."""
    reason = real_redis_available()
    if reason is not None:
        service_missing("Redis", reason)
    prefix = f"sgsync{uuid.uuid4().hex[:8]}"
    yield prefix
    client = SyncRedis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_coreason_variables_configure_a_deployment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COREASON_BUDGET_REDIS_URL", "redis://coreason:6379/2")
    monkeypatch.setenv("COREASON_BUDGET_DAILY_USER_LIMIT_USD", "12.5")
    monkeypatch.setenv("COREASON_BUDGET_DAILY_PROJECT_LIMIT_USD", "300")
    monkeypatch.setenv("COREASON_BUDGET_DAILY_GLOBAL_LIMIT_USD", "4000")
    monkeypatch.setenv("COREASON_BUDGET_LOG_PATH", "/var/log/budget.log")
    config = BudgetConfig()
    assert config.redis_url == "redis://coreason:6379/2"
    assert config.daily_user_limit == Decimal("12.5")
    assert config.daily_project_limit == Decimal(300)
    assert config.daily_global_limit == Decimal(4000)
    assert config.log_path == Path("/var/log/budget.log")


def test_coreasons_env_file_configures_a_deployment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # coreason-budget reads its variables from .env too (its env_file): a
    # deployment that kept them there must not fall back to the embedded
    # store, its caps to the defaults.
    for variable in ("SPENDGATE_REDIS_URL", "SPENDGATE_DAILY_USER_LIMIT"):
        monkeypatch.delenv(variable, raising=False)
    (tmp_path / ".env").write_text(
        "COREASON_BUDGET_REDIS_URL=redis://coreason:6379/2\n"
        "COREASON_BUDGET_DAILY_USER_LIMIT_USD=12.5\n"
        "COREASON_BUDGET_DAILY_GLOBAL_LIMIT_USD=4000\n"
        "UNRELATED=1\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    config = BudgetConfig()
    assert config.redis_url == "redis://coreason:6379/2"
    assert config.daily_user_limit == Decimal("12.5")
    assert config.daily_global_limit == Decimal(4000)
    # The environment, then ours, then arguments win over the file.
    monkeypatch.setenv("COREASON_BUDGET_DAILY_USER_LIMIT_USD", "7")
    assert BudgetConfig().daily_user_limit == Decimal(7)
    monkeypatch.setenv("SPENDGATE_DAILY_USER_LIMIT", "3")
    assert BudgetConfig().daily_user_limit == Decimal(3)
    assert BudgetConfig(daily_user_limit=2).daily_user_limit == Decimal(2)


def test_coreasons_price_overrides_variable_prices_its_models(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # coreason's settings class reads every field from COREASON_BUDGET_*, its
    # model_price_overrides too (JSON); left unread, a deployment's own
    # prices were silently replaced by LiteLLM's map (or UnknownModelError).
    monkeypatch.delenv("SPENDGATE_MODEL_PRICE_OVERRIDES", raising=False)
    monkeypatch.chdir(tmp_path)
    prices = (
        '{"house-llm": {"input_cost_per_token": 0.1, "output_cost_per_token": 0.3}}'
    )
    monkeypatch.setenv("COREASON_BUDGET_MODEL_PRICE_OVERRIDES", prices)
    config = BudgetConfig()
    assert config.model_price_overrides == {
        "house-llm": {
            "input_cost_per_token": Decimal("0.1"),
            "output_cost_per_token": Decimal("0.3"),
        }
    }
    ours = '{"m": {"input_cost_per_token": 1, "output_cost_per_token": 2}}'
    monkeypatch.setenv("SPENDGATE_MODEL_PRICE_OVERRIDES", ours)
    # (ours win whole: coreason's mapping is not merged into it)
    assert list(BudgetConfig().model_price_overrides) == ["m"]
    monkeypatch.delenv("SPENDGATE_MODEL_PRICE_OVERRIDES")
    monkeypatch.setenv("COREASON_BUDGET_MODEL_PRICE_OVERRIDES", "{not json")
    with pytest.raises(ConfigurationError, match="model_price_overrides"):
        load_config()


def test_spendgate_variables_and_arguments_win_over_coreason_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COREASON_BUDGET_REDIS_URL", "redis://coreason:6379/2")
    monkeypatch.setenv("COREASON_BUDGET_DAILY_USER_LIMIT_USD", "12.5")
    monkeypatch.setenv("SPENDGATE_REDIS_URL", "redis://ours:6379/3")
    config = BudgetConfig()
    assert config.redis_url == "redis://ours:6379/3"
    assert BudgetConfig(daily_user_limit_usd=7).daily_user_limit == Decimal(7)
    assert BudgetConfig(daily_user_limit=8).daily_user_limit == Decimal(8)


def test_coreason_field_names_read_back() -> None:
    config = BudgetConfig(
        daily_user_limit_usd=3, daily_project_limit_usd=30, daily_global_limit_usd=300
    )
    assert config.daily_user_limit_usd == Decimal(3)
    assert config.daily_limit_usd == Decimal(3)
    assert config.daily_project_limit_usd == Decimal(30)
    assert config.daily_global_limit_usd == Decimal(300)


async def test_close_is_aclose(make_budget: MakeBudget) -> None:
    budget = make_budget()
    await budget.record_spend("ada", "1")
    await budget.close()
    with pytest.raises(RuntimeError):
        await budget.record_spend("ada", "1")


async def test_refusals_keep_coreasons_wording(make_budget: MakeBudget) -> None:
    budget = make_budget(daily_user_limit="1")
    await budget.record_spend("ada", "1")
    with pytest.raises(BudgetExceededError) as refused:
        await budget.check_availability("ada", estimated_cost="0.5")
    assert str(refused.value).startswith("User daily limit exceeded for 'ada'")


def test_sync_calls_work_without_an_event_loop(key_prefix_sync: str) -> None:
    config = BudgetConfig(
        redis_url=REDIS_URL, key_prefix=key_prefix_sync, daily_user_limit="2"
    )
    budget = BudgetManager(config)
    try:
        assert budget.check_availability_sync("ada", estimated_cost="1") is True
        record = budget.record_spend_sync("ada", "2", model="m")
        assert record.amount == Decimal(2) and not record.spooled
        with pytest.raises(BudgetExceededError):
            budget.check_availability_sync("ada", estimated_cost="1")
    finally:
        budget.close_sync()


async def test_sync_calls_refuse_inside_an_event_loop(make_budget: MakeBudget) -> None:
    budget = make_budget()
    with pytest.raises(RuntimeError, match="await"):
        budget.check_availability_sync("ada")
    await asyncio.sleep(0)


def test_pricing_calculate_cost_is_calculate() -> None:
    budget = BudgetManager(
        BudgetConfig(
            model_price_overrides={
                "m": {"input_cost_per_token": "0.001", "output_cost_per_token": "0.002"}
            }
        )
    )
    assert budget.pricing.calculate_cost("m", 10, 5) == Decimal("0.020")
    assert budget.pricing.calculate_cost("m", 10, 5) == budget.pricing.calculate(
        "m", 10, 5
    )


def test_a_refusal_made_from_a_message_is_that_message() -> None:
    # coreason-budget raises, and its users' mocks build, the error from one
    # message: BudgetExceededError("Global daily limit exceeded").
    error = BudgetExceededError("Global daily limit exceeded")
    assert str(error) == "Global daily limit exceeded"
    assert error.args == ("Global daily limit exceeded",)
    assert (error.scope, error.window, error.limit) == (None, None, None)
    # The structured form is unchanged, a scope alone included.
    assert BudgetExceededError("user", "u", "daily").scope == "user"
    assert str(BudgetExceededError("global")).startswith("Global None limit")


class UserContext:
    """coreason-identity's ``UserContext``, as far as a budget reads it."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id


async def test_coreason_041s_user_context_keyword_is_taken(
    make_budget: MakeBudget,
) -> None:
    # coreason-budget 0.4.1 names the first argument user_context, and its
    # own server passes it by keyword.
    budget = make_budget(daily_user_limit="1")
    ada = UserContext("ada")
    record = await budget.record_spend(user_context=ada, cost=1.0, project_id="p")
    assert (record.user_id, record.project_id) == ("ada", "p")
    with pytest.raises(BudgetExceededError) as refused:
        await budget.check_availability(user_context=ada, estimated_cost=0.5)
    assert refused.value.scope_id == "ada"
    with pytest.raises(InvalidArgumentError, match="not both"):
        await budget.check_availability("ada", user_context=ada)
    with pytest.raises(InvalidArgumentError, match="not both"):
        await budget.record_spend("ada", 1, user_context=ada)
    usage = await budget.get_usage("ada")
    assert usage["user"].daily.spent == Decimal(1)  # (the refused calls: nothing)


def test_coreason_041s_user_context_keyword_is_taken_sync(
    key_prefix_sync: str,
) -> None:
    config = BudgetConfig(
        redis_url=REDIS_URL, key_prefix=key_prefix_sync, daily_user_limit=1
    )
    budget = BudgetManager(config)
    try:
        ada = UserContext("ada")
        budget.record_spend_sync(user_context=ada, cost=1.0)
        with pytest.raises(BudgetExceededError):
            budget.check_availability_sync(user_context=ada, estimated_cost=0.5)
    finally:
        budget.close_sync()


def test_coreasons_import_line_imports() -> None:
    # coreason-budget's __all__, every version: the import line switches as is.
    from spendgate import (  # noqa: F401
        BudgetConfig,
        BudgetExceededError,
        BudgetManager,
        CoreasonBudgetConfig,
        RedisConnectionError,
    )

    assert CoreasonBudgetConfig is BudgetConfig
    # Its "could not connect to Redis": here, admission fails closed.
    assert RedisConnectionError is BudgetUnavailableError
