"""The settings, grouped by what they configure.

Each section is a pydantic model of its own fields and checks;
:class:`~spendgate.config.BudgetConfig` is all of them in one flat class, so
``BudgetConfig(redis_url=...)`` and every ``SPENDGATE_*`` variable keep one
name each. A section reads as the part of the system it sets: the store,
the caps, the guard's own limits, durability, the ledger, the server,
pricing.
"""

from __future__ import annotations

import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, SecretStr, field_validator

from spendgate.core.money import to_decimal
from spendgate.errors import InvalidAmountError

_PREFIX_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")

#: the default caps, in the one order used everywhere (the scripts'
#: constants, the manager's defaults): (scope, window, field)
DEFAULT_CAPS = (
    ("user", "daily", "daily_user_limit"),
    ("user", "monthly", "monthly_user_limit"),
    ("project", "daily", "daily_project_limit"),
    ("project", "monthly", "monthly_project_limit"),
    ("global", "daily", "daily_global_limit"),
    ("global", "monthly", "monthly_global_limit"),
    ("user", "weekly", "weekly_user_limit"),
    ("project", "weekly", "weekly_project_limit"),
    ("global", "weekly", "weekly_global_limit"),
    ("user", "per_minute", "per_minute_user_limit"),
    ("project", "per_minute", "per_minute_project_limit"),
    ("global", "per_minute", "per_minute_global_limit"),
)
#: the fields of the default caps
LIMIT_FIELDS = tuple(field for _, _, field in DEFAULT_CAPS)


def blank_is_none(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _exact(value: object, what: str) -> Decimal:
    try:
        return to_decimal(value)
    except InvalidAmountError as exc:
        raise ValueError(f"{what}: {exc}") from None


class StoreSettings(BaseModel):
    """Where Redis is and how the hot path talks to it."""

    #: Redis URL; ``None`` (and no ``SPENDGATE_REDIS_URL``) runs on the embedded
    #: in-process store, for demos and tests
    redis_url: str | None = Field(default=None, repr=False)
    #: every Redis key starts with it, so deployments can share one Redis
    key_prefix: str = "spendgate"
    #: socket read/write timeout of the hot path, seconds
    redis_timeout_seconds: float = Field(default=0.25, gt=0, le=60)
    #: connect timeout, seconds
    redis_connect_timeout_seconds: float = Field(default=0.25, gt=0, le=60)
    #: connection pool size, per BudgetManager
    redis_max_connections: int = Field(default=512, ge=1, le=100_000)
    #: how long a call waits for a free connection when all of the pool's are
    #: busy (a burst of this process's own calls, not an outage: the wait is
    #: bounded by the busy calls' own timeouts), seconds
    redis_pool_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    #: send calls made concurrently together, in one round trip (each is
    #: still its own atomic script); a lone call is sent at once either way
    redis_pipelining: bool = True
    #: ``redis_url`` is any node of a Redis Cluster: each call goes straight
    #: to the master that owns its keys (found from the cluster's slot map,
    #: followed through MOVED and ASK), with its own pool and pipelining per
    #: node; a node that does not answer is unavailable for its keys only
    redis_cluster: bool = False
    #: spread the keys over this many buckets of users, each its own hash
    #: tag (``{sg:<bucket>}``), so a Redis Cluster's masters share the work;
    #: 1 keeps every key under ``{sg}`` (one slot). A user's caps stay
    #: exact; a project's and the platform's daily and monthly caps are
    #: lent to the buckets in chunks (escrow: :mod:`spendgate.ops.escrow`);
    #: their weekly and per-minute caps, cap actions, per-model caps and
    #: teams cannot be decided in one bucket, and a sharded deployment
    #: refuses them (:mod:`spendgate.core.shards`). Fixed for the life of a
    #: deployment's keys.
    cluster_buckets: int = Field(default=1, ge=1, le=1024)
    #: sharded: what a bucket borrows at the least of a project's or the
    #: platform's cap when what it holds of it runs short. Larger: fewer
    #: borrowing round trips; more that sits unused in other buckets
    #: until a bucket short of it takes it back
    escrow_chunk: Decimal = Field(
        default=Decimal(1), gt=0, le=10**9, allow_inf_nan=False
    )

    @field_validator("key_prefix")
    @classmethod
    def _plain_prefix(cls, value: str) -> str:
        if not _PREFIX_PATTERN.fullmatch(value):
            raise ValueError(
                "key_prefix must be 1-64 characters of letters, digits and _ . : -"
            )
        return value

    @field_validator("redis_url", mode="before")
    @classmethod
    def _blank_url(cls, value: Any) -> Any:
        return blank_is_none(value)


class CapSettings(BaseModel):
    """The default caps of every scope, and the prepaid balance rule."""

    #: the unit amounts are in; a label only
    unit: str = "USD"
    # Defaults for every entity of a scope, overridable per entity at run
    # time with BudgetManager.set_limits. The daily defaults are
    # coreason-budget's, so its users keep their protection when they switch.
    daily_user_limit: Decimal | None = Decimal(10)
    monthly_user_limit: Decimal | None = None
    daily_project_limit: Decimal | None = Decimal(500)
    monthly_project_limit: Decimal | None = None
    daily_global_limit: Decimal | None = Decimal(5000)
    monthly_global_limit: Decimal | None = None
    #: refuse users whose prepaid balance cannot cover the request
    enforce_balance: bool = False
    #: the balance a user may not go below at admission (negative: a credit line)
    min_balance: Decimal = Decimal(0)
    #: the time zone (IANA name) whose midnight starts the daily, weekly and
    #: monthly windows, for the whole deployment
    window_timezone: str = "UTC"
    # Weekly caps (ISO weeks, from Monday 00:00 in window_timezone). Weekly
    # counters are kept only when a weekly default is set or weekly_caps is
    # on: otherwise no script reads or writes one.
    weekly_user_limit: Decimal | None = None
    weekly_project_limit: Decimal | None = None
    weekly_global_limit: Decimal | None = None
    #: keep weekly counters (and allow per-entity weekly caps) with no
    #: weekly default; on by itself when a weekly default is set
    weekly_caps: bool = False
    # Per-minute caps: a sliding minute of spend per scope. Counted only where
    # a per-minute cap applies, and only when a per-minute default is set or
    # per_minute_caps is on: otherwise no script reads or writes a minute.
    per_minute_user_limit: Decimal | None = None
    per_minute_project_limit: Decimal | None = None
    per_minute_global_limit: Decimal | None = None
    #: allow per-entity per-minute caps (set_limits per_minute=...): facts
    #: then read each scope's overrides to know which minutes to count; off,
    #: the per-minute defaults alone apply
    per_minute_caps: bool = False
    #: once a scope reaches its per-minute cap, refuse it for this long
    #: (seconds; 0 = no kill switch, only the sliding minute)
    kill_switch_seconds: int = Field(default=0, ge=0, le=7 * 86400)
    #: allow per-model caps (set_limits(..., model=...)) for every scope:
    #: facts with a model then count per model, and admission with a model
    #: checks its caps, in the same scripts. Off, the scripts are exactly
    #: those of a deployment that never had per-model caps
    model_caps: bool = False
    #: allow cap actions (set_limits action="warn"/"notify"/"deny" and
    #: thresholds): the charging scripts then read the scopes' overrides and
    #: write threshold events. Off, the scripts carry none of it
    cap_actions: bool = False
    #: a charge that takes a user's balance from at least this to below it
    #: writes one ``credits.low_balance`` event (again once a credit raises
    #: it back); ``None``: no such event, and the scripts carry none of it
    low_balance_threshold: Decimal | None = None

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

    @field_validator("low_balance_threshold", mode="before")
    @classmethod
    def _exact_low_balance(cls, value: Any) -> Decimal | None:
        if value is None or (
            isinstance(value, str) and value.strip().lower() in ("", "none")
        ):
            return None
        return cls._exact_min_balance(value)

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

    @field_validator("window_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}: an IANA name such as "
                "'America/New_York' (install tzdata where the system has no "
                "time zone database)"
            ) from None
        return value

    def default_caps(self) -> tuple[Decimal | None, ...]:
        """The default caps, in the order of :data:`DEFAULT_CAPS`."""
        return tuple(getattr(self, field) for _, _, field in DEFAULT_CAPS)

    @property
    def weekly_enabled(self) -> bool:
        """Weekly counters are kept: ``weekly_caps``, or a weekly default."""
        return self.weekly_caps or self._any_default("weekly")

    @property
    def per_minute_enabled(self) -> bool:
        """Spend is counted per minute where a per-minute cap applies:
        ``per_minute_caps``, or a per-minute default."""
        return self.per_minute_caps or self._any_default("per_minute")

    def _any_default(self, window: str) -> bool:
        return any(
            getattr(self, field) is not None
            for _, kind, field in DEFAULT_CAPS
            if kind == window
        )


class GuardSettings(BaseModel):
    """How admission, leases and idempotency behave, and the input bounds."""

    #: admit (and log) instead of refusing when the store does not answer
    fail_open: bool = False
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


class CreditSettings(BaseModel):
    """Prepaid grants and refunds."""

    #: how long a charge can be refunded: each charge keeps a small record
    #: this long (see the README for its memory); 0 = no record, refunds off
    refund_window_seconds: int = Field(default=30 * 86400, ge=0, le=400 * 86400)
    #: the most grants one call expires, and the most one charge draws on: the
    #: bound on a call's work whatever the number of grants a user holds
    grants_per_call: int = Field(default=64, ge=1, le=1000)


def _default_spool_path() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(state) / "spendgate" / "spool"


class DurabilitySettings(BaseModel):
    """The spool that keeps facts while Redis is away, and the breaker."""

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


#: the ledger stream's cap when no flusher drains it
UNDRAINED_LEDGER_MAXLEN = 1_000_000


class LedgerSettings(BaseModel):
    """The ledger stream and its copy in Postgres."""

    #: approximate cap of the ledger stream; 0 = uncapped. ``None`` picks:
    #: uncapped when a Postgres DSN is set (the flusher drains it), else 1,000,000
    ledger_maxlen: int | None = Field(default=None, ge=0)
    #: Postgres DSN of the analytics ledger
    postgres_dsn: str | None = Field(default=None, repr=False)
    #: seconds between flushes
    flush_interval_seconds: float = Field(default=1.0, gt=0, le=3600)
    #: ledger entries per flush batch
    flush_batch_size: int = Field(default=5000, ge=1, le=100_000)

    @field_validator("postgres_dsn", mode="before")
    @classmethod
    def _blank_dsn(cls, value: Any) -> Any:
        return blank_is_none(value)

    @property
    def effective_ledger_maxlen(self) -> int:
        """The stream cap in force: 0 (uncapped) when a flusher drains the stream.

        Sharded alike: the flusher drains every bucket's ledger stream as it
        does the root's (:mod:`spendgate.ledger.homes`)."""
        if self.ledger_maxlen is not None:
            return self.ledger_maxlen
        return 0 if self.postgres_dsn else UNDRAINED_LEDGER_MAXLEN


class ServerSettings(BaseModel):
    """``spendgate serve`` and the CLI."""

    #: a file the CLI and ``spendgate serve`` also log to (coreason-budget's
    #: LOG_PATH); a library leaves its log's handlers to the application
    log_path: Path | None = None

    #: bearer API keys of ``spendgate serve``, comma-separated. A secret: kept
    #: out of repr, logs and ``describe()``; read it with :meth:`api_key_list`
    api_keys: SecretStr | None = Field(default=None, repr=False)

    def api_key_list(self) -> list[str]:
        """The configured API keys: ``api_keys`` split at commas, blanks dropped."""
        if self.api_keys is None:
            return []
        return [
            k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip()
        ]


class PricingSettings(BaseModel):
    """Model prices beside LiteLLM's cost map."""

    #: coreason-budget's format: {model: {input_cost_per_token, output_cost_per_token}}
    model_price_overrides: dict[str, dict[str, Decimal]] = Field(default_factory=dict)
    #: the price of a model found neither in the overrides nor in LiteLLM's cost
    #: map, same format as one override ({input_cost_per_token, output_cost_per_token});
    #: ``None`` = such a model raises UnknownModelError
    default_model_price: dict[str, Decimal] | None = None

    @field_validator("model_price_overrides", mode="before")
    @classmethod
    def _exact_prices(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        out: dict[str, dict[str, Decimal]] = {}
        for model, prices in value.items():
            if not isinstance(prices, dict):
                raise ValueError(f"prices of {model!r} must be a mapping")
            out[model] = {
                k: _exact(v, f"price of {model!r}") for k, v in prices.items()
            }
        return out

    @field_validator("default_model_price", mode="before")
    @classmethod
    def _exact_default_price(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {k: _exact(v, "default_model_price") for k, v in value.items()}
