"""The exceptions spendgate raises, under one root.

::

    SpendgateError
    ├── BudgetExceededError          admission refused: over a cap or the balance
    │   ├── BudgetUnavailableError   admission refused: the store did not answer
    │   └── InsufficientCreditsError deduct refused: allowance + balance too low
    ├── InvalidArgumentError         (also ValueError) an argument that is not valid
    │   ├── InvalidAmountError       NaN, infinities, negatives, bools, too large...
    │   ├── InvalidIdError           empty, blank or over-long ids and keys
    │   ├── UnknownModelError        (also LookupError) a model nothing prices
    │   ├── ExpressionError          a pricing expression failed on this usage
    │   └── RefundExceedsChargeError more refunded than what is left of a charge
    ├── InvalidIdTypeError           (also TypeError) an id that is not a str
    ├── UnknownEntryError            (also LookupError) no refundable charge of that id
    ├── FeatureLimitExceededError    use_feature refused: the feature's max_calls
    ├── FeatureNotEntitledError      use_feature: the user's plan has no such feature
    ├── NotATeamMemberError          a team charge by a user not in the team
    ├── TeamNotFoundError            (also LookupError) no team of that id
    ├── TeamExistsError              create_team: the team exists already
    ├── IdempotencyConflictError     a key replayed with different arguments
    ├── LeaseStateError              an illegal lease transition
    ├── SpoolFullError               a fact reached neither Redis nor the full spool
    ├── StorageError                 Redis answered with an unexpected error (a bug)
    ├── LedgerUnavailableError       Postgres could not be reached
    ├── ConfigurationError           (also ValueError) invalid settings
    │   └── PricingConfigError       a price book that does not load
    ├── PoisonEntryError             (also ValueError) a ledger entry that cannot
    │                                become a row
    └── WebhookError                 a webhook did not take an event (an answer
                                     other than 2xx, a timeout, no connection)

Each error has one outcome, in :data:`OUTCOMES`: the HTTP status the server
answers, the exit code the CLI ends with and the label metrics count it
under. The server, the CLI and the metrics read that table; none keeps its
own.

``BudgetUnavailableError`` subclasses ``BudgetExceededError`` on purpose: code
written for coreason-budget catches ``BudgetExceededError`` to refuse a call,
and a store that cannot answer must refuse it too (fail closed).
"""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal
from enum import IntEnum
from typing import Any, Literal, NamedTuple

Scope = Literal["user", "project", "global"]
#: the scope a refusal names: a charge on a team's pool may also be refused
#: by the team's pool (``"team"``) or the member's caps on it
#: (``"team_member"``, its ``scope_id`` the user)
RefusalScope = Literal["user", "project", "global", "team", "team_member"]
Window = Literal["daily", "monthly", "balance", "weekly", "minute"]

#: ``Retry-After`` of a refusal with no window to wait for: a balance can be
#: topped up at any moment
BALANCE_RETRY_AFTER_SECONDS = 60


class SpendgateError(Exception):
    """Root of every error spendgate raises on purpose."""


class BudgetExceededError(SpendgateError):
    """Admission refused: the request would pass a cap or the balance.

    :param scope: ``"user"``, ``"project"`` or ``"global"``; for a charge
        on a team's pool also ``"team"`` (its pool) or ``"team_member"``
        (the member's caps on the team)
    :param scope_id: the user, project or team id (the user for
        ``"team_member"``); ``None`` for the global scope
    :param window: ``"daily"``, ``"weekly"``, ``"monthly"``, ``"minute"``
        (the per-minute cap, or its kill switch) or ``"balance"``
    :param limit: the cap of that window; for ``"balance"``, the balance above
        ``min_balance`` (what could be spent at all)
    :param spent: spent in the window (for ``"balance"``: 0, the balance
        already reflects spending)
    :param requested: the amount asked for
    :param held: the amount held by open leases in that scope
    :param resets_at: when the window rolls over (UTC); for ``"minute"``,
        when enough of the minute's spend has left it for this request to
        fit (or when the kill switch ends); ``None`` for balances
    """

    def __init__(
        self,
        scope: RefusalScope | None = None,
        scope_id: str | None = None,
        window: Window | None = None,
        limit: Decimal | None = None,
        spent: Decimal | None = None,
        requested: Decimal | None = None,
        resets_at: datetime | None = None,
        held: Decimal | None = None,
        message: str | None = None,
    ) -> None:
        self.scope = scope
        self.scope_id = scope_id
        self.window = window
        self.limit = limit
        self.spent = spent
        self.requested = requested
        self.resets_at = resets_at
        self.held = held
        super().__init__(message or self._describe())

    def retry_after_seconds(self, now: datetime) -> int:
        """Whole seconds from ``now`` until the window resets (at least 1);
        ``BALANCE_RETRY_AFTER_SECONDS`` for a balance, which has no window."""
        if self.resets_at is None:
            return BALANCE_RETRY_AFTER_SECONDS
        return max(1, math.ceil((self.resets_at - now).total_seconds()))

    def to_json(self, now: datetime) -> dict[str, Any]:
        """The refusal as JSON values (amounts as exact decimal strings), as
        the HTTP server and the ASGI middleware answer a 429 with it."""
        return {
            "status": "refused",
            "detail": str(self),
            "scope": self.scope,
            "scope_id": self.scope_id,
            "window": self.window,
            "limit": _money(self.limit),
            "spent": _money(self.spent),
            "held": _money(self.held),
            "requested": _money(self.requested),
            "resets_at": self.resets_at.isoformat() if self.resets_at else None,
            "retry_after_seconds": self.retry_after_seconds(now),
        }

    def _describe(self) -> str:
        # coreason-budget's wording first ("User daily limit exceeded for
        # ..."): its callers match on it.
        scope = (self.scope or "budget").capitalize()
        who = "" if self.scope_id is None else f" for {self.scope_id!r}"
        text = (
            f"{scope} {self.window} limit exceeded{who}: limit {self.limit}, "
            f"spent {self.spent}, held {self.held}, requested {self.requested}"
        )
        if self.resets_at is not None:
            text += f"; resets at {self.resets_at.isoformat()}"
        return text


def _money(amount: Decimal | None) -> str | None:
    return None if amount is None else str(amount)


class BudgetUnavailableError(BudgetExceededError):
    """Admission refused because the store could not be reached in time.

    Raised instead of admitting when ``fail_open`` is off (the default).
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(message=f"budget store unavailable, refusing: {reason}")


class InvalidArgumentError(SpendgateError, ValueError):
    """An argument that is not valid: metadata, model, TTL, and the subclasses."""


class InvalidAmountError(InvalidArgumentError):
    """An amount that is not a finite, non-negative number within the maximum."""

    def __init__(self, value: object, reason: str) -> None:
        self.value = value
        self.reason = reason
        super().__init__(f"invalid amount {_short_repr(value)}: {reason}")


def _short_repr(value: object, limit: int = 80) -> str:
    # Whatever the value (a 5,000-digit int cannot even be turned into text),
    # the message stays short and is always made.
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class InvalidIdError(InvalidArgumentError):
    """An id or key that is empty, blank, or longer than the configured limit."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"invalid {name}: {reason}")


class UnknownModelError(InvalidArgumentError, LookupError):
    """A model that neither the price overrides nor LiteLLM's cost map price
    per token, while no ``default_model_price`` is configured."""

    def __init__(self, model: str, reason: str = "") -> None:
        self.model = model
        self.reason = reason
        message = f"no price for model {model!r}"
        super().__init__(f"{message}: {reason}" if reason else message)


class ExpressionError(InvalidArgumentError):
    """A pricing expression could not be evaluated for this usage: division
    or modulo by zero, a non-finite or out-of-range result.

    :param expression: the expression's text
    :param reason: what went wrong
    """

    def __init__(self, expression: str, reason: str) -> None:
        self.expression = expression
        self.reason = reason
        super().__init__(f"pricing expression {expression!r}: {reason}")


class RefundExceedsChargeError(InvalidArgumentError):
    """A refund above what is left of the charge (``refundable``; ``requested``
    ``None``: all of it): a charge's refunds never exceed it. Nothing changed."""

    def __init__(self, entry_id: str, requested: Decimal | None, refundable: Decimal):
        self.entry_id, self.requested, self.refundable = entry_id, requested, refundable
        asked = "the rest" if requested is None else str(requested)
        super().__init__(f"cannot refund {asked} of {entry_id!r}: {refundable} left")


class UnknownEntryError(SpendgateError, LookupError):
    """No refundable charge of that entry id: unknown, older than
    ``refund_window_seconds``, or made with refunds off. Nothing changed."""

    def __init__(self, entry_id: str) -> None:
        self.entry_id = entry_id
        super().__init__(f"no refundable charge {entry_id!r}")


class FeatureLimitExceededError(SpendgateError):
    """``use_feature`` refused: the feature's calls reached ``max_calls`` in
    this period and its action is ``deny``. Nothing was counted.

    :param user_id: the user
    :param feature: the feature
    :param limit: ``max_calls``
    :param used: the calls counted this period
    :param period: the limit's calendar period (``"monthly"``...)
    :param resets_at: when the count starts again (UTC)
    """

    def __init__(
        self,
        user_id: str,
        feature: str,
        limit: int,
        used: int,
        period: str,
        resets_at: datetime,
    ) -> None:
        self.user_id = user_id
        self.feature = feature
        self.limit = limit
        self.used = used
        self.period = period
        self.resets_at = resets_at
        super().__init__(
            f"feature {feature!r} limit reached for {user_id!r}: {used} of"
            f" {limit} {period} calls used; resets at {resets_at.isoformat()}"
        )


class FeatureNotEntitledError(SpendgateError):
    """``use_feature`` refused: the user's plan neither has the feature
    (bursar's truthy rule) nor limits it, or the user has no plan. Nothing
    was counted."""

    def __init__(self, user_id: str, feature: str, plan_id: str | None) -> None:
        self.user_id = user_id
        self.feature = feature
        self.plan_id = plan_id
        plan = "has no plan" if plan_id is None else f"has plan {plan_id!r}"
        super().__init__(
            f"user {user_id!r} {plan}, which does not include feature {feature!r}"
        )


class InvalidIdTypeError(SpendgateError, TypeError):
    """An id that is not a ``str``."""

    def __init__(self, name: str, value: object) -> None:
        self.name = name
        super().__init__(f"{name} must be a str, not {type(value).__name__}")


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


class InsufficientCreditsError(BudgetExceededError):
    """``deduct`` refused: the allowance and the balance cannot cover the
    charge above the ``min_balance`` floor (``window == "balance"``)."""


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


class NotATeamMemberError(SpendgateError):
    """A charge on a team's pool by a user who is not one of its members (or
    the removal of one). Nothing changed."""

    def __init__(self, team_id: str, user_id: str) -> None:
        self.team_id = team_id
        self.user_id = user_id
        super().__init__(f"user {user_id!r} is not a member of team {team_id!r}")


class TeamNotFoundError(SpendgateError, LookupError):
    """No team of that id (``create_team`` makes one). Nothing changed."""

    def __init__(self, team_id: str) -> None:
        self.team_id = team_id
        super().__init__(f"no team {team_id!r}")


class TeamExistsError(SpendgateError):
    """``create_team``: a team of that id exists already (it was left as it
    is: its pool is topped up with ``credit_team``)."""

    def __init__(self, team_id: str) -> None:
        self.team_id = team_id
        super().__init__(f"team {team_id!r} exists already")


class ExitCode(IntEnum):
    """What the ``spendgate`` command exits with."""

    #: the command did what it was asked
    OK = 0
    #: it failed (a bug, a damaged key, an unexpected error)
    FAILURE = 1
    #: bad arguments or settings: nothing was tried
    USAGE = 2
    #: refused: over a cap or the balance
    REFUSED = 3
    #: Redis or Postgres did not answer: nothing was done, try again
    UNAVAILABLE = 4


class Outcome(NamedTuple):
    """How one error is reported at each edge."""

    #: the HTTP status of the server's answer
    status: int
    #: the CLI's exit code
    exit_code: ExitCode
    #: the metrics' label for it
    metric: str


#: every error's outcome, most specific first: :func:`outcome_of` takes the
#: first entry the error is an instance of
OUTCOMES: tuple[tuple[type[BaseException], Outcome], ...] = (
    (BudgetUnavailableError, Outcome(503, ExitCode.UNAVAILABLE, "unavailable")),
    (BudgetExceededError, Outcome(429, ExitCode.REFUSED, "refused")),
    (SpoolFullError, Outcome(503, ExitCode.UNAVAILABLE, "unavailable")),
    (LedgerUnavailableError, Outcome(503, ExitCode.UNAVAILABLE, "unavailable")),
    (StorageError, Outcome(503, ExitCode.FAILURE, "storage")),
    (IdempotencyConflictError, Outcome(409, ExitCode.USAGE, "conflict")),
    (FeatureLimitExceededError, Outcome(429, ExitCode.REFUSED, "feature_limit")),
    (FeatureNotEntitledError, Outcome(403, ExitCode.REFUSED, "not_entitled")),
    (LeaseStateError, Outcome(409, ExitCode.USAGE, "lease_state")),
    (NotATeamMemberError, Outcome(403, ExitCode.REFUSED, "not_a_member")),
    (TeamNotFoundError, Outcome(404, ExitCode.USAGE, "unknown_team")),
    (TeamExistsError, Outcome(409, ExitCode.USAGE, "team_exists")),
    (RefundExceedsChargeError, Outcome(409, ExitCode.USAGE, "refund_exceeds")),
    (UnknownEntryError, Outcome(404, ExitCode.USAGE, "unknown_entry")),
    (PricingConfigError, Outcome(422, ExitCode.USAGE, "invalid")),
    (ConfigurationError, Outcome(500, ExitCode.USAGE, "configuration")),
    (InvalidArgumentError, Outcome(422, ExitCode.USAGE, "invalid")),
    (InvalidIdTypeError, Outcome(422, ExitCode.USAGE, "invalid")),
    (PoisonEntryError, Outcome(500, ExitCode.FAILURE, "poison")),
    # (the server never delivers webhooks: one reaching it is a bug, 500)
    (WebhookError, Outcome(500, ExitCode.UNAVAILABLE, "webhook")),
    (SpendgateError, Outcome(500, ExitCode.FAILURE, "error")),
)

#: what any other exception is reported as
UNEXPECTED = Outcome(500, ExitCode.FAILURE, "error")


def outcome_of(exc: BaseException) -> Outcome:
    """The outcome of ``exc`` from :data:`OUTCOMES` (:data:`UNEXPECTED` for an
    error that is not spendgate's)."""
    for kind, outcome in OUTCOMES:
        if isinstance(exc, kind):
            return outcome
    return UNEXPECTED
