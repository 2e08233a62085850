"""The exceptions spendgate raises, under one root.

The modules are split by role (``base``: the root; ``refusals``; ``teams``;
``arguments``: bad input; ``failures``; ``outcomes``: each error's
outcome at the edges); every name is imported from here.

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
    ├── RebucketRefusedError         a rebucketing found what it must not move
    ├── ConfigurationError           (also ValueError) invalid settings
    │   ├── PricingConfigError       a price book that does not load
    │   └── ShardedRefusalError      what a sharded deployment cannot decide
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

from spendgate.errors.arguments import (
    ExpressionError,
    InvalidAmountError,
    InvalidArgumentError,
    InvalidIdError,
    InvalidIdTypeError,
    RefundExceedsChargeError,
    UnknownEntryError,
    UnknownModelError,
)
from spendgate.errors.base import (
    BALANCE_RETRY_AFTER_SECONDS,
    RefusalScope,
    Scope,
    SpendgateError,
    Window,
)
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
from spendgate.errors.outcomes import (
    OUTCOMES,
    UNEXPECTED,
    ExitCode,
    Outcome,
    outcome_of,
)
from spendgate.errors.refusals import (
    BudgetExceededError,
    BudgetUnavailableError,
    FeatureLimitExceededError,
    FeatureNotEntitledError,
    InsufficientCreditsError,
)
from spendgate.errors.teams import (
    NotATeamMemberError,
    TeamExistsError,
    TeamNotFoundError,
)

__all__ = [
    "BALANCE_RETRY_AFTER_SECONDS",
    "BudgetExceededError",
    "BudgetUnavailableError",
    "ConfigurationError",
    "ExitCode",
    "ExpressionError",
    "FeatureLimitExceededError",
    "FeatureNotEntitledError",
    "IdempotencyConflictError",
    "InsufficientCreditsError",
    "InvalidAmountError",
    "InvalidArgumentError",
    "InvalidIdError",
    "InvalidIdTypeError",
    "LeaseStateError",
    "LedgerUnavailableError",
    "NotATeamMemberError",
    "OUTCOMES",
    "Outcome",
    "PoisonEntryError",
    "PricingConfigError",
    "RebucketRefusedError",
    "RefundExceedsChargeError",
    "ShardedRefusalError",
    "RefusalScope",
    "Scope",
    "SpendgateError",
    "SpoolFullError",
    "StorageError",
    "TeamExistsError",
    "TeamNotFoundError",
    "UNEXPECTED",
    "UnknownEntryError",
    "UnknownModelError",
    "WebhookError",
    "Window",
    "outcome_of",
]
