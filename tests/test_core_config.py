"""Configuration: env prefix, coreason-budget names, validation, redaction,
the embedded default announced once, and the demo running end to end."""

from __future__ import annotations

from decimal import Decimal

import pytest
from loguru import logger
from pydantic import ValidationError

from spendgate import BudgetConfig, BudgetManager
from spendgate.config import redact_url


def test_defaults_are_coreasons_daily_caps() -> None:
    config = BudgetConfig()
    assert config.daily_user_limit == Decimal(10)
    assert config.daily_project_limit == Decimal(500)
    assert config.daily_global_limit == Decimal(5000)
    assert config.monthly_user_limit is None
    assert config.redis_url is None
    assert config.key_prefix == "spendgate"
    assert config.redis_timeout_seconds < 1


def test_environment_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPENDGATE_REDIS_URL", "redis://127.0.0.1:6379/3")
    monkeypatch.setenv("SPENDGATE_DAILY_USER_LIMIT", "2.5")
    monkeypatch.setenv("SPENDGATE_MONTHLY_GLOBAL_LIMIT", "none")
    monkeypatch.setenv("SPENDGATE_ENFORCE_BALANCE", "true")
    config = BudgetConfig()
    assert config.redis_url == "redis://127.0.0.1:6379/3"
    assert config.daily_user_limit == Decimal("2.5")
    assert config.monthly_global_limit is None
    assert config.enforce_balance is True


def test_coreason_field_names_are_accepted() -> None:
    config = BudgetConfig(
        daily_user_limit_usd=1.5,
        daily_project_limit_usd="20",
        daily_global_limit_usd=100,
        model_price_overrides={"m": {"input_cost_per_token": 0.000001}},
    )
    assert config.daily_user_limit == Decimal("1.5")
    assert config.daily_project_limit == Decimal("20")
    assert config.daily_global_limit == Decimal("100")
    assert config.model_price_overrides["m"]["input_cost_per_token"] == Decimal(
        "0.000001"
    )
    assert BudgetConfig(daily_limit_usd=3).daily_user_limit == Decimal(3)


@pytest.mark.parametrize(
    "settings",
    [
        {"daily_user_limit": -1},
        {"monthly_project_limit": "nan"},
        {"daily_global_limit": float("inf")},
        {"daily_user_limit": True},
        {"key_prefix": "has space"},
        {"key_prefix": "brace{"},
        {"key_prefix": ""},
        {"redis_timeout_seconds": 0},
        {"lease_ttl_seconds": 0},
        {"unknown_setting": 1},
        {"min_balance": "abc"},
    ],
    ids=repr,
)
def test_invalid_settings_are_rejected(settings: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        BudgetConfig(**settings)  # type: ignore[arg-type]


def test_negative_min_balance_is_a_credit_line() -> None:
    assert BudgetConfig(min_balance="-5").min_balance == Decimal(-5)


def test_secrets_are_redacted() -> None:
    config = BudgetConfig(
        redis_url="redis://:hunter2@db.internal:6379/0",
        postgres_dsn="postgresql://app:hunter2@pg/ledger",
    )
    assert "hunter2" not in repr(config)
    assert "hunter2" not in str(config.describe())
    assert redact_url("redis://user:pw@h:1/0") == "redis://user:***@h:1/0"
    assert redact_url("redis://h:1/0") == "redis://h:1/0"


async def test_embedded_default_is_announced_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import spendgate.core.connection as connection

    monkeypatch.setattr(connection, "_embedded_server", None)
    messages: list[str] = []
    sink = logger.add(messages.append, level="WARNING")
    try:
        for _ in range(3):
            async with BudgetManager(
                BudgetConfig(key_prefix="embedded-test")
            ) as budget:
                assert budget.embedded
                await budget.record_spend("alice", "1")
        # The embedded store is process-wide: the three managers shared it.
        async with BudgetManager(BudgetConfig(key_prefix="embedded-test")) as budget:
            usage = await budget.get_usage("alice")
            assert usage["user"].daily.spent == 3
    finally:
        logger.remove(sink)
    assert sum("embedded" in m for m in messages) == 1


async def test_demo_walkthrough_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import spendgate.core.connection as connection
    from spendgate.cli.demo import walkthrough

    monkeypatch.setattr(connection, "_embedded_server", None)
    await walkthrough()
    out = capsys.readouterr().out
    assert "refused: user daily cap 1" in out
    assert "replayed entry" in out
    assert "remaining today: 0.076543 USD" in out
