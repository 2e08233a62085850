"""Each error's one outcome at the edges: the HTTP status, the CLI's exit
code and the metrics' label (:data:`OUTCOMES`)."""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

from spendgate.errors.arguments import (
    InvalidArgumentError,
    InvalidIdTypeError,
    RefundExceedsChargeError,
    UnknownEntryError,
)
from spendgate.errors.base import SpendgateError
from spendgate.errors.failures import (
    ConfigurationError,
    IdempotencyConflictError,
    LeaseStateError,
    LedgerUnavailableError,
    PoisonEntryError,
    PricingConfigError,
    RebucketRefusedError,
    ShardedRefusalError,
    SpoolFullError,
    StorageError,
    WebhookError,
)
from spendgate.errors.refusals import (
    BudgetExceededError,
    BudgetUnavailableError,
    FeatureLimitExceededError,
    FeatureNotEntitledError,
)
from spendgate.errors.teams import (
    NotATeamMemberError,
    TeamExistsError,
    TeamNotFoundError,
)


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
    # (a valid request this deployment's layout cannot decide: the client's)
    (ShardedRefusalError, Outcome(422, ExitCode.USAGE, "sharded")),
    (ConfigurationError, Outcome(500, ExitCode.USAGE, "configuration")),
    (InvalidArgumentError, Outcome(422, ExitCode.USAGE, "invalid")),
    (InvalidIdTypeError, Outcome(422, ExitCode.USAGE, "invalid")),
    (PoisonEntryError, Outcome(500, ExitCode.FAILURE, "poison")),
    (RebucketRefusedError, Outcome(409, ExitCode.FAILURE, "rebucket_refused")),
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
