"""Settings, from keyword arguments or ``SPENDGATE_*`` environment variables.

coreason-budget's field names (``daily_user_limit_usd``, ``daily_limit_usd``,
``daily_project_limit_usd``, ``daily_global_limit_usd``,
``model_price_overrides``) are accepted as keyword arguments, so its users
switch by changing the import.
"""

from __future__ import annotations

import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from spendgate.core.money import to_decimal
from spendgate.errors import ConfigurationError, InvalidAmountError

_COREASON_NAMES = {
    "daily_user_limit_usd": "daily_user_limit",
    "daily_limit_usd": "daily_user_limit",
    "daily_project_limit_usd": "daily_project_limit",
    "daily_global_limit_usd": "daily_global_limit",
}

_PREFIX_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

LIMIT_FIELDS = (
    "daily_user_limit",
    "daily_project_limit",
    "daily_global_limit",
    "monthly_user_limit",
    "monthly_project_limit",
    "monthly_global_limit",
)


def _default_spool_path() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(state) / "spendgate" / "spool"


# A URL's scheme, and what follows it.
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<rest>.*)", re.S)
# A query parameter whose name says it is a password (?password=, &sslpassword=).
_QUERY_SECRET = re.compile(r"(?i)([?&;][^=&;#?]*password[^=&;#?]*=)([^&;#]*)")
# A key/value pair (libpq's "host=h password=secret" form), value quoted or not.
_KEYWORD_SECRET = re.compile(
    r"(?i)((?:^|\s)\w*password\w*\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)"
)
# Where a parser may cut a password (an unencoded "#", "@", a space...).
_DELIMITERS = re.compile(r"[#/?@:&;\s'\\]")


def _userinfo_end(rest: str) -> int:
    """Where a URL's user-info ends (the "@" before the host), or -1.

    Passwords are not always percent-encoded (an "@", "#" or "/" in them), so
    it is taken to run to the last "@": when in doubt (an "@" in the query
    too) more is redacted, never less.
    """
    return rest.rfind("@")


def _redact_parts(url: str) -> tuple[str, list[str]]:
    """``url`` with every password replaced by ``***``, and those passwords."""
    secrets: list[str] = []

    def hide(match: re.Match[str]) -> str:
        value = match.group(2)
        secrets.append(value)
        if value.startswith("'"):  # libpq quoting: 'it\'s'
            secrets.append(re.sub(r"\\(.)", r"\1", value.strip("'")))
        return match.group(1) + "***"

    found = _URL.fullmatch(url)
    if found is None:  # a key/value DSN, or not a URL at all
        return _KEYWORD_SECRET.sub(hide, url), secrets
    rest = found["rest"]
    end = _userinfo_end(rest)
    userinfo, host = (rest[:end], rest[end + 1 :]) if end >= 0 else ("", rest)
    if ":" in userinfo:
        user, _, password = userinfo.partition(":")
        secrets.append(password)
        userinfo = f"{user}:***"
    host = _QUERY_SECRET.sub(hide, host)
    return found["scheme"] + (f"{userinfo}@" if end >= 0 else "") + host, secrets


def redact_url(url: str | None) -> str:
    """A URL or DSN with its passwords replaced by ``***``, for logs and
    errors: the user-info's (``redis://:secret@h``, also with an unencoded
    ``#`` or ``@``), query parameters named like ``password`` (``?password=``,
    ``&sslpassword=``) and key/value pairs (``host=h password=secret``)."""
    if not url:
        return "<none>"
    return _redact_parts(url)[0]


def redact_secrets(text: str, url: str | None) -> str:
    """``text`` (a driver's error message, say) with the passwords of ``url``
    replaced by ``***``: each whole, percent-decoded, and each piece a parser
    may have cut it into at a ``#``, ``@``, ``/``... (pieces of one character
    are left: they give nothing away)."""
    if not url:
        return text
    pieces: set[str] = set()
    for secret in _redact_parts(url)[1]:
        for form in (secret, unquote(secret)):
            pieces.add(form)
            pieces.update(_DELIMITERS.split(form))
    for piece in sorted(pieces, key=len, reverse=True):
        if len(piece) > 1:
            text = text.replace(piece, "***")
    return text


class BudgetConfig(BaseSettings):
    """Everything a deployment sets. Amounts are in the operator's unit (USD by
    default); ``None`` for a limit means no cap."""

    model_config = SettingsConfigDict(
        env_prefix="SPENDGATE_",
        extra="forbid",
        validate_default=True,
        frozen=True,
    )

    #: Redis URL; ``None`` (and no ``SPENDGATE_REDIS_URL``) runs on the embedded
    #: in-process store, for demos and tests
    redis_url: str | None = Field(default=None, repr=False)
    #: every Redis key starts with it, so deployments can share one Redis
    key_prefix: str = "spendgate"
    #: the unit amounts are in; a label only
    unit: str = "USD"

    # Caps: defaults for every entity of a scope, overridable per entity at run
    # time with BudgetManager.set_limits. The daily defaults are
    # coreason-budget's, so its users keep their protection when they switch.
    daily_user_limit: Decimal | None = Decimal(10)
    daily_project_limit: Decimal | None = Decimal(500)
    daily_global_limit: Decimal | None = Decimal(5000)
    monthly_user_limit: Decimal | None = None
    monthly_project_limit: Decimal | None = None
    monthly_global_limit: Decimal | None = None

    #: refuse users whose prepaid balance cannot cover the request
    enforce_balance: bool = False
    #: the balance a user may not go below at admission (negative: a credit line)
    min_balance: Decimal = Decimal(0)

    #: admit (and log) instead of refusing when the store does not answer
    fail_open: bool = False
    #: socket read/write timeout of the hot path, seconds
    redis_timeout_seconds: float = Field(default=0.25, gt=0, le=60)
    #: connect timeout, seconds
    redis_connect_timeout_seconds: float = Field(default=0.25, gt=0, le=60)
    #: connection pool size, per BudgetManager
    redis_max_connections: int = Field(default=512, ge=1, le=100_000)
    #: send calls made concurrently together, in one round trip (each is
    #: still its own atomic script); a lone call is sent at once either way
    redis_pipelining: bool = True

    #: a lease's hold stops counting after this, unless given per reserve
    lease_ttl_seconds: int = Field(default=300, ge=1, le=7 * 86400)
    #: how long an idempotency key (and a finished lease record) is remembered
    idempotency_ttl_seconds: int = Field(default=86400, ge=60, le=30 * 86400)
    #: day and month counters live this long past the end of their window
    counter_retention_seconds: int = Field(default=2 * 86400, ge=0, le=400 * 86400)
    #: expired holds purged at most per call (a larger backlog drains over calls)
    expired_holds_purged_per_call: int = Field(default=256, ge=1, le=10_000)

    #: the longest user, project, lease id or idempotency key, in characters
    max_id_length: int = Field(default=512, ge=16, le=65_536)
    #: the largest metadata accepted, as JSON bytes
    max_metadata_bytes: int = Field(default=8192, ge=0, le=1_048_576)

    #: approximate cap of the ledger stream; 0 = uncapped. ``None`` picks:
    #: uncapped when a Postgres DSN is set (the flusher drains it), else 1,000,000
    ledger_maxlen: int | None = Field(default=None, ge=0)

    #: Postgres DSN of the analytics ledger
    postgres_dsn: str | None = Field(default=None, repr=False)
    #: seconds between flushes
    flush_interval_seconds: float = Field(default=1.0, gt=0, le=3600)
    #: ledger entries per flush batch
    flush_batch_size: int = Field(default=5000, ge=1, le=100_000)

    #: where facts go while Redis cannot be reached
    spool_path: Path = Field(default_factory=_default_spool_path)
    #: the most facts the spool holds before it refuses (SpoolFullError)
    spool_max_entries: int = Field(default=1_000_000, ge=1)
    #: seconds between replay attempts while the spool holds facts
    spool_replay_interval_seconds: float = Field(default=0.5, gt=0, le=3600)
    #: consecutive store failures that open the circuit breaker (admission then
    #: fails fast and facts go straight to the spool, without touching Redis)
    breaker_failure_threshold: int = Field(default=5, ge=1, le=1_000_000)
    #: seconds the breaker stays open before one probe call is let through
    breaker_reset_seconds: float = Field(default=1.0, ge=0, le=3600)

    #: bearer API keys of ``spendgate serve``, comma-separated. A secret: kept
    #: out of repr, logs and :meth:`describe`; read it with :meth:`api_key_list`
    api_keys: SecretStr | None = Field(default=None, repr=False)

    #: coreason-budget's format: {model: {input_cost_per_token, output_cost_per_token}}
    model_price_overrides: dict[str, dict[str, Decimal]] = Field(default_factory=dict)
    #: the price of a model found neither in the overrides nor in LiteLLM's cost
    #: map, same format as one override ({input_cost_per_token, output_cost_per_token});
    #: ``None`` = such a model raises UnknownModelError
    default_model_price: dict[str, Decimal] | None = None

    @model_validator(mode="before")
    @classmethod
    def _accept_coreason_names(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for old, new in _COREASON_NAMES.items():
                if old in data:
                    value = data.pop(old)
                    data.setdefault(new, value)
        return data

    @field_validator(*LIMIT_FIELDS, mode="before")
    @classmethod
    def _exact_limit(cls, value: Any) -> Decimal | None:
        if value is None or (
            isinstance(value, str) and value.strip().lower() in ("", "none")
        ):
            return None
        try:
            return to_decimal(value)
        except InvalidAmountError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("min_balance", mode="before")
    @classmethod
    def _exact_min_balance(cls, value: Any) -> Decimal:
        if isinstance(value, Decimal | int | float | str) and not isinstance(
            value, bool
        ):
            text = str(value).strip()
            negative = text.startswith("-")
            try:
                amount = to_decimal(text[1:] if negative else value)
            except InvalidAmountError as exc:
                raise ValueError(str(exc)) from None
            return -amount if negative else amount
        raise ValueError(f"min_balance must be a number, not {type(value).__name__}")

    @field_validator("key_prefix")
    @classmethod
    def _plain_prefix(cls, value: str) -> str:
        if not _PREFIX_PATTERN.fullmatch(value):
            raise ValueError(
                "key_prefix must be 1-64 characters of letters, digits and _ . : -"
            )
        return value

    @field_validator("redis_url", "postgres_dsn", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("model_price_overrides", mode="before")
    @classmethod
    def _exact_prices(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out: dict[str, dict[str, Decimal]] = {}
        for model, prices in value.items():
            if not isinstance(prices, dict):
                raise ValueError(f"prices of {model!r} must be a mapping")
            try:
                out[model] = {k: to_decimal(v) for k, v in prices.items()}
            except InvalidAmountError as exc:
                raise ValueError(f"price of {model!r}: {exc}") from None
        return out

    @field_validator("default_model_price", mode="before")
    @classmethod
    def _exact_default_price(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        try:
            return {k: to_decimal(v) for k, v in value.items()}
        except InvalidAmountError as exc:
            raise ValueError(f"default_model_price: {exc}") from None

    @property
    def effective_ledger_maxlen(self) -> int:
        """The stream cap in force: 0 (uncapped) when a flusher drains the stream."""
        if self.ledger_maxlen is not None:
            return self.ledger_maxlen
        return 0 if self.postgres_dsn else 1_000_000

    def api_key_list(self) -> list[str]:
        """The configured API keys: ``api_keys`` split at commas, blanks dropped."""
        if self.api_keys is None:
            return []
        return [
            k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip()
        ]

    def describe(self) -> dict[str, Any]:
        """The settings with secrets redacted, for logs and ``spendgate config``."""
        data = self.model_dump(mode="json")
        data["redis_url"] = redact_url(self.redis_url) if self.redis_url else None
        data["postgres_dsn"] = (
            redact_url(self.postgres_dsn) if self.postgres_dsn else None
        )
        return data


def load_config(**overrides: Any) -> BudgetConfig:
    """Build a config, turning pydantic's error into a :class:`ConfigurationError`."""
    from pydantic import ValidationError

    try:
        return BudgetConfig(**overrides)
    except ValidationError as exc:
        raise ConfigurationError(str(exc)) from None
