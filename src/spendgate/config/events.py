"""The events section of the configuration: the dispatcher's consumer
group, retries and the webhook (see :mod:`spendgate.events`)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field, SecretStr, field_validator

from spendgate.config.sections import blank_is_none

#: a consumer group's name: it ends the heartbeat set's key
_GROUP_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def _comma_list(value: str | None) -> list[str]:
    if not value:
        return []
    return [part.strip() for part in value.split(",") if part.strip()]


class EventSettings(BaseModel):
    """Event delivery: the dispatcher, its retries, and the webhook sink.

    Named ``events_*`` in :class:`~spendgate.config.BudgetConfig` (and
    ``SPENDGATE_EVENTS_*`` in the environment).
    """

    #: webhook URL(s) that ``spendgate events run`` POSTs every event to,
    #: comma-separated. May carry a token: kept out of repr, logs (only the
    #: scheme and host are shown) and ``describe()``
    events_webhook_url: str | None = Field(default=None, repr=False)
    #: the secret each webhook body is signed with (HMAC-SHA256); required
    #: with a webhook URL. Kept out of repr, logs and ``describe()``
    events_webhook_secret: SecretStr | None = Field(default=None, repr=False)
    #: the event types the webhook gets, comma-separated; ``*`` for all
    events_webhook_types: str = "*"
    #: one webhook request's timeout (connect, send and answer), seconds
    events_webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    #: the consumer group of ``spendgate events run`` (each group gets every
    #: event once; the dispatchers of one group share them)
    events_webhook_group: str = "spendgate-webhooks"
    #: the consumer group of the in-process dispatcher (``budget.events.on``)
    events_group: str = "spendgate-events"
    #: attempts to deliver one event to one handler or webhook before it is
    #: dead-lettered
    events_max_attempts: int = Field(default=5, ge=1, le=100)
    #: the wait after a first failed attempt, doubled after each (with
    #: jitter), seconds
    events_backoff_seconds: float = Field(default=0.5, ge=0, le=3600)
    #: the longest wait between two attempts, seconds
    events_max_backoff_seconds: float = Field(default=30.0, ge=0, le=3600)
    #: stream entries read at most per stream and read (the events and the
    #: ledger stream of each stream home count apart: sharded, a batch can
    #: hold this many of every bucket's)
    events_batch_size: int = Field(default=100, ge=1, le=10_000)
    #: one handler call's timeout (a call that takes longer is a failed
    #: attempt), seconds
    events_handler_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    #: a dispatcher's heartbeat TTL: how long the events of a killed
    #: dispatcher wait before another claims them, seconds
    events_heartbeat_seconds: float = Field(default=10.0, gt=0, le=3600)
    #: events pending this long on a consumer that keeps no heartbeat are
    #: claimed by another, seconds
    events_claim_idle_seconds: float = Field(default=60.0, gt=0, le=86400)

    @field_validator("events_webhook_url", mode="before")
    @classmethod
    def _webhook_urls(cls, value: Any) -> Any:
        value = blank_is_none(value)
        if not isinstance(value, str):
            return value
        for url in _comma_list(value):
            if not url.lower().startswith(("http://", "https://")):
                # (the URL itself may hold a token: not repeated here)
                raise ValueError("each events_webhook_url must be http:// or https://")
        return value

    @field_validator("events_webhook_secret", mode="before")
    @classmethod
    def _blank_secret(cls, value: Any) -> Any:
        return blank_is_none(value)

    @field_validator("events_webhook_types")
    @classmethod
    def _known_types(cls, value: str) -> str:
        from spendgate.core.protocol import EventType

        known = {str(t) for t in EventType}
        for name in _comma_list(value):
            if name != "*" and name not in known:
                raise ValueError(
                    f"unknown event type {name!r} in events_webhook_types; "
                    f"known: *, {', '.join(sorted(known))}"
                )
        return value

    @field_validator("events_group", "events_webhook_group")
    @classmethod
    def _plain_group(cls, value: str) -> str:
        if not _GROUP_PATTERN.fullmatch(value):
            raise ValueError(
                "a consumer group name is 1-64 letters, digits and _ . : -"
            )
        return value

    def webhook_url_list(self) -> list[str]:
        """The configured webhook URLs (``events_webhook_url`` split at commas)."""
        return _comma_list(self.events_webhook_url)

    def webhook_type_list(self) -> list[str]:
        """The event types the webhook gets; ``["*"]`` for all."""
        return _comma_list(self.events_webhook_types) or ["*"]
