"""``BudgetConfig``: every setting, from keyword arguments or ``SPENDGATE_*``
environment variables, one flat class made of the sections of
:mod:`spendgate.config.sections`.

coreason-budget's field names (``daily_user_limit_usd``, ``daily_limit_usd``,
``daily_project_limit_usd``, ``daily_global_limit_usd``,
``model_price_overrides``) are accepted as keyword arguments, so its users
switch by changing the import.
"""

from __future__ import annotations

import json
import os
from decimal import Decimal
from pathlib import Path
from typing import Any

from dotenv import dotenv_values
from pydantic import model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from spendgate.config.events import EventSettings
from spendgate.config.redact import redact_url, redact_webhook_url
from spendgate.config.sections import (
    DEFAULT_CAPS,
    CapSettings,
    CreditSettings,
    DurabilitySettings,
    GuardSettings,
    LedgerSettings,
    PricingSettings,
    ServerSettings,
    StoreSettings,
)
from spendgate.errors import ConfigurationError

_COREASON_NAMES = {
    "daily_user_limit_usd": "daily_user_limit",
    "daily_limit_usd": "daily_user_limit",
    "daily_project_limit_usd": "daily_project_limit",
    "daily_global_limit_usd": "daily_global_limit",
}

#: coreason-budget's environment variables (its documented ones, and the
#: price overrides its settings class reads as JSON) -> our fields; read
#: when the SPENDGATE_ variable of the same field is not set
COREASON_ENV = {
    "COREASON_BUDGET_REDIS_URL": "redis_url",
    "COREASON_BUDGET_DAILY_USER_LIMIT_USD": "daily_user_limit",
    "COREASON_BUDGET_DAILY_PROJECT_LIMIT_USD": "daily_project_limit",
    "COREASON_BUDGET_DAILY_GLOBAL_LIMIT_USD": "daily_global_limit",
    "COREASON_BUDGET_LOG_PATH": "log_path",
    "COREASON_BUDGET_MODEL_PRICE_OVERRIDES": "model_price_overrides",
}


#: where coreason-budget also reads its variables: a ``.env`` file in the
#: working directory (its ``env_file``), below the environment's
COREASON_ENV_FILE = Path(".env")


def coreason_variables() -> dict[str, str]:
    """coreason-budget's variables that are set: the environment's, else
    its ``.env`` file's (a deployment that kept them there keeps them)."""
    found: dict[str, str] = {}
    if COREASON_ENV_FILE.is_file():
        values = dotenv_values(COREASON_ENV_FILE, encoding="utf-8")
        found.update(
            (variable, value)
            for variable, value in values.items()
            if variable in COREASON_ENV and value is not None
        )
    found.update(
        (variable, os.environ[variable])
        for variable in COREASON_ENV
        if variable in os.environ
    )
    return found


class _CoreasonEnv(PydanticBaseSettingsSource):
    """coreason-budget's ``COREASON_BUDGET_*`` variables, below ours."""

    def get_field_value(
        self, field: FieldInfo, field_name: str
    ) -> tuple[Any, str, bool]:
        for variable, value in coreason_variables().items():
            if COREASON_ENV[variable] == field_name:
                return self._decoded(field_name, value), field_name, False
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        # pydantic-settings merges a mapping of several sources key by key:
        # ours set, coreason's mapping must not be merged into it.
        ours = {name.upper() for name in os.environ}
        return {
            field: self._decoded(field, value)
            for variable, value in coreason_variables().items()
            if f"SPENDGATE_{(field := COREASON_ENV[variable]).upper()}" not in ours
        }

    def _decoded(self, field_name: str, value: str) -> Any:
        """A mapping's value read as JSON, as pydantic-settings reads it
        (text that is not JSON is left for the field to refuse)."""
        field = self.settings_cls.model_fields[field_name]
        if not self.field_is_complex(field):
            return value
        try:
            return json.loads(value)
        except ValueError:
            return value


# (pydantic lists the fields of the last base first: the sections are named
# here in reverse, so the fields read store, caps, guard, ... pricing, events)
class BudgetConfig(
    BaseSettings,
    EventSettings,
    PricingSettings,
    ServerSettings,
    LedgerSettings,
    DurabilitySettings,
    CreditSettings,
    GuardSettings,
    CapSettings,
    StoreSettings,
):
    """Everything a deployment sets. Amounts are in the operator's unit (USD by
    default); ``None`` for a limit means no cap. The fields are grouped by
    section in :mod:`spendgate.config.sections`."""

    model_config = SettingsConfigDict(
        env_prefix="SPENDGATE_",
        extra="forbid",
        validate_default=True,
        frozen=True,
        # An error names the setting, never its value: a check across fields
        # would show every setting given, passwords in URLs and DSNs too.
        hide_input_in_errors=True,
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Arguments, then SPENDGATE_*, then coreason-budget's variables: a
        # coreason deployment keeps its settings; ours win when both are set.
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            _CoreasonEnv(settings_cls),
            file_secret_settings,
        )

    # coreason-budget's field names, readable as its users read them
    @property
    def daily_user_limit_usd(self) -> Decimal | None:
        return self.daily_user_limit

    @property
    def daily_limit_usd(self) -> Decimal | None:
        return self.daily_user_limit

    @property
    def daily_project_limit_usd(self) -> Decimal | None:
        return self.daily_project_limit

    @property
    def daily_global_limit_usd(self) -> Decimal | None:
        return self.daily_global_limit

    def __init__(self, **values: Any) -> None:
        # coreason-budget's argument names, renamed before the environment is
        # read: an argument wins over any variable, whatever its name.
        for old, new in _COREASON_NAMES.items():
            if old in values:
                value = values.pop(old)
                values.setdefault(new, value)
        super().__init__(**values)

    @model_validator(mode="after")
    def _one_bucket_decides(self) -> BudgetConfig:
        # Sharded, a call runs in its user's bucket: no bucket sees a
        # project's or the platform's whole spend (spendgate.core.shards).
        # Their daily and monthly caps are lent out (spendgate.ops.escrow);
        # a week or a sliding minute is not.
        if self.cluster_buckets > 1:
            shared = [
                field
                for scope, window, field in DEFAULT_CAPS
                if scope != "user"
                and window not in ("daily", "monthly")
                and getattr(self, field) is not None
            ]
            if shared:
                raise ValueError(
                    f"cluster_buckets={self.cluster_buckets} decides each call in"
                    " its user's bucket, so weekly and per-minute caps of projects"
                    f" and the platform cannot be kept: set {', '.join(shared)}"
                    " to None (their daily and monthly caps are lent to the"
                    " buckets; user caps stay exact)"
                )
        return self

    def describe(self) -> dict[str, Any]:
        """The settings with secrets redacted, for logs and ``spendgate config``."""
        data = self.model_dump(mode="json")
        data["redis_url"] = redact_url(self.redis_url) if self.redis_url else None
        data["postgres_dsn"] = (
            redact_url(self.postgres_dsn) if self.postgres_dsn else None
        )
        data["events_webhook_url"] = (
            ",".join(redact_webhook_url(url) for url in self.webhook_url_list()) or None
        )
        return data


def load_config(**overrides: Any) -> BudgetConfig:
    """Build a config, turning pydantic's error into a :class:`ConfigurationError`."""
    from pydantic import ValidationError

    try:
        return BudgetConfig(**overrides)
    except ValidationError as exc:
        raise ConfigurationError(str(exc)) from None
