"""Configuration: env prefix, coreason-budget names, validation, redaction,
the embedded default announced once, and the demo running end to end."""

from __future__ import annotations

from decimal import Decimal

import pytest
from loguru import logger
from pydantic import ValidationError

from spendgate import BudgetConfig, BudgetManager, ConfigurationError
from spendgate.config import load_config, redact_url


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


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter2@db:6379/0",
        "redis://user:hunter2@db:6379/0",
        "rediss://:hunter2@db:6380/0?ssl_cert_reqs=none",
        "redis://db:6379/0?password=hunter2",
        "redis://db:6379/0?db=1&password=hunter2&ssl=true",
        "redis://:hun#ter2@db:6379/0",
        "redis://:hun/ter2@db:6379/0",
        "redis://:hun@ter2@db:6379/0",
        "postgresql://app:hunter2@pg:5432/ledger",
        "postgresql://app@pg/ledger?sslmode=require&password=hunter2",
        "host=pg port=5432 user=app password=hunter2 dbname=ledger",
        "host=pg password='hun ter2' dbname=ledger",
        "host=pg PASSWORD = hunter2",
    ],
)
def test_every_form_of_password_is_redacted(url: str) -> None:
    redacted = redact_url(url)
    assert "hunter2" not in redacted and "ter2" not in redacted
    assert "***" in redacted
    field = "postgres_dsn" if "pg" in url else "redis_url"
    assert "ter2" not in str(BudgetConfig(**{field: url}).describe())


async def test_a_malformed_url_does_not_show_its_password() -> None:
    budget = BudgetManager(BudgetConfig(redis_url="redis://:pa#ssWORD9@db:6379/0"))
    with pytest.raises(ConfigurationError) as error:
        await budget.check_availability("ada")
    # (the parser reads the part before "#" as a port and quotes it)
    assert "ssWORD9" not in str(error.value) and "'pa'" not in str(error.value)


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


@pytest.mark.parametrize(
    "secret",
    [
        {"postgres_dsn": "postgresql://app:hunter2@pg/ledger"},
        {"redis_url": "redis://:hunter2@db:6379/0"},
        {"events_webhook_url": "https://hooks.example/hunter2"},
        {"events_webhook_secret": "hunter2"},
    ],
)
def test_a_settings_error_does_not_show_the_settings_given(
    secret: dict[str, str],
) -> None:
    # (a check across settings: pydantic quoted every setting given, the tail
    # of a DSN's password or the head of a URL's among them)
    refused = {"cluster_buckets": 4, "weekly_project_limit": 5, **secret}
    with pytest.raises(ValidationError) as direct:
        BudgetConfig(**refused)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError) as loaded:
        load_config(**refused)
    for message in (str(direct.value), str(loaded.value)):
        assert "weekly_project_limit" in message
        assert "hunter2" not in message and "hun" not in message
