"""Conflicts and failures: idempotency, leases, the stores, settings,
the ledger and webhooks."""

from __future__ import annotations

from spendgate.errors.base import SpendgateError


class IdempotencyConflictError(SpendgateError):
    """The idempotency key was already used with different arguments."""

    def __init__(self, key: str, detail: str = "") -> None:
        self.key = key
        message = f"idempotency key {key!r} was already used with different arguments"
        super().__init__(f"{message}: {detail}" if detail else message)


class LeaseStateError(SpendgateError):
    """An illegal lease transition, or a lease that is not known."""

    def __init__(self, lease_id: str, state: str, action: str) -> None:
        self.lease_id = lease_id
        self.state = state
        self.action = action
        super().__init__(f"cannot {action} lease {lease_id!r}: it is {state}")


class SpoolFullError(SpendgateError):
    """A fact could reach neither Redis nor the local spool, which is full."""


class StorageError(SpendgateError):
    """Redis answered a script with an unexpected error: a bug, not an outage."""


class ConfigurationError(SpendgateError, ValueError):
    """Invalid or inconsistent settings."""


class ShardedRefusalError(ConfigurationError):
    """What a sharded deployment (``cluster_buckets`` above 1) cannot
    decide, asked of one: teams, a project's or the platform's weekly and
    per-minute caps, per-model caps and cap actions, adjusting their
    counters. Nothing changed; the request is valid elsewhere."""


class PricingConfigError(ConfigurationError):
    """A price book that does not load: a malformed document, or an
    expression outside the allowed subset (found when it is loaded, never
    when a charge is priced).

    :param reason: what is wrong
    :param expression: the offending expression, when one is
    :param position: where in it (``line:column``, 1-based), when known
    :param where: where the expression sits in the book (``models.gpt-4o``)
    """

    def __init__(
        self,
        reason: str,
        expression: str | None = None,
        position: str | None = None,
        where: str | None = None,
    ) -> None:
        self.reason = reason
        self.expression = expression
        self.position = position
        self.where = where
        text = reason
        if expression is not None:
            at = f" at {position}" if position else ""
            text = f"{reason} in {expression!r}{at}"
        super().__init__(f"{where}: {text}" if where else text)


class RebucketRefusedError(SpendgateError):
    """A rebucketing (``spendgate rebucket``) found what it must not move:
    each reason in :attr:`reasons`. Nothing changed."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = list(reasons)
        super().__init__("nothing moved: " + "; ".join(self.reasons))


class LedgerUnavailableError(SpendgateError):
    """Postgres could not be reached (or went away) while moving the ledger.

    Nothing was acknowledged in Redis: the entries stay in the stream and are
    moved on a later try.
    """


class PoisonEntryError(SpendgateError, ValueError):
    """A stream entry that cannot become a ledger row."""


class WebhookError(SpendgateError):
    """A webhook did not take an event: it answered other than 2xx, or not
    in time, or could not be reached. The dispatcher retries it, then
    dead-letters the event.

    :param target: the webhook, as logs may show it (scheme and host only)
    :param reason: what went wrong (the status, or the transport's error)
    :param status: the HTTP status it answered, ``None`` when it did not
    """

    def __init__(self, target: str, reason: str, status: int | None = None) -> None:
        self.target = target
        self.reason = reason
        self.status = status
        super().__init__(f"webhook {target}: {reason}")
