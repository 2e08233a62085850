"""spendgate: a Redis-backed, low-latency budget guard for LLM applications.

Admits or refuses a call in one Redis round trip, records what was spent
exactly once, and ships the ledger to Postgres for analytics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loguru import logger as _logger

from spendgate.config import BudgetConfig
from spendgate.core.money import MAX_AMOUNT
from spendgate.corrections import Adjustment, Transaction
from spendgate.errors import (
    BudgetExceededError,
    BudgetUnavailableError,
    ConfigurationError,
    ExpressionError,
    FeatureLimitExceededError,
    FeatureNotEntitledError,
    IdempotencyConflictError,
    InsufficientCreditsError,
    InvalidAmountError,
    InvalidArgumentError,
    InvalidIdError,
    InvalidIdTypeError,
    LeaseStateError,
    LedgerUnavailableError,
    NotATeamMemberError,
    PoisonEntryError,
    PricingConfigError,
    RefundExceedsChargeError,
    SpendgateError,
    SpoolFullError,
    StorageError,
    TeamExistsError,
    TeamNotFoundError,
    UnknownEntryError,
    UnknownModelError,
    WebhookError,
)
from spendgate.manager import UNSET, BudgetManager, LeaseContext
from spendgate.models import (
    Balance,
    DeductResult,
    Grant,
    Lease,
    Limits,
    ModelUsage,
    PriceBookVersion,
    RefundResult,
    ScopeUsage,
    SpendRecord,
    SweepReport,
    WindowUsage,
)
from spendgate.teams import Team, TeamMember

__version__ = "0.1.0"

#: coreason-budget's names, so that its users switch by changing the import
#: alone: its config class, and the error it raised when Redis could not be
#: reached (here, admission refused because the store did not answer)
CoreasonBudgetConfig = BudgetConfig
RedisConnectionError = BudgetUnavailableError

# A library stays quiet unless the application turns it on (loguru's own
# advice): logger.enable("spendgate") does, and the spendgate command and
# `spendgate serve` do it at their --log-level.
_logger.disable("spendgate")

__all__ = [
    "MAX_AMOUNT",
    "CoreasonBudgetConfig",
    "RedisConnectionError",
    "UNSET",
    "Adjustment",
    "Balance",
    "BudgetConfig",
    "BudgetExceededError",
    "BudgetManager",
    "BudgetUnavailableError",
    "ConfigurationError",
    "DeductResult",
    "ExpressionError",
    "FeatureLimitExceededError",
    "FeatureNotEntitledError",
    "IdempotencyConflictError",
    "Grant",
    "InsufficientCreditsError",
    "InvalidAmountError",
    "InvalidArgumentError",
    "InvalidIdError",
    "InvalidIdTypeError",
    "Lease",
    "LeaseContext",
    "LeaseStateError",
    "LedgerUnavailableError",
    "Limits",
    "ModelUsage",
    "NotATeamMemberError",
    "PoisonEntryError",
    "PriceBookVersion",
    "PricingConfigError",
    "RefundExceedsChargeError",
    "RefundResult",
    "ScopeUsage",
    "SpendRecord",
    "SpendgateError",
    "SpoolFullError",
    "StorageError",
    "SweepReport",
    "Team",
    "TeamExistsError",
    "TeamMember",
    "TeamNotFoundError",
    "Transaction",
    "UnknownEntryError",
    "UnknownModelError",
    "WebhookError",
    "WindowUsage",
    "__version__",
]

# The Postgres side loads on first use: importing spendgate never imports
# asyncpg (the flusher and analytics import it when they first connect).
if TYPE_CHECKING:
    from spendgate.events.dispatcher import EventDispatcher as EventDispatcher
    from spendgate.events.model import Event as Event
    from spendgate.ledger.analytics import Analytics as Analytics
    from spendgate.ledger.flusher import Flusher as Flusher
    from spendgate.plans.models import FeatureCheck as FeatureCheck
    from spendgate.plans.models import FeatureLimit as FeatureLimit
    from spendgate.plans.models import Plan as Plan
    from spendgate.plans.models import UserPlan as UserPlan
    from spendgate.pricing.engine import PricingEngine as PricingEngine
    from spendgate.pricing.usage import CostBreakdown as CostBreakdown
    from spendgate.pricing.usage import ToolCall as ToolCall
    from spendgate.pricing.usage import UsageMetrics as UsageMetrics

_LAZY = {
    "Analytics": "spendgate.ledger.analytics",
    # Event delivery loads when used (a manager without handlers never does).
    "Event": "spendgate.events.model",
    "EventDispatcher": "spendgate.events.dispatcher",
    "Flusher": "spendgate.ledger.flusher",
    # The price book's modules (ast, the compiler) load on first use too.
    "CostBreakdown": "spendgate.pricing.usage",
    # The plans' result types (their module loads the calendar and pricing).
    "FeatureCheck": "spendgate.plans.models",
    "FeatureLimit": "spendgate.plans.models",
    "Plan": "spendgate.plans.models",
    "UserPlan": "spendgate.plans.models",
    "PricingEngine": "spendgate.pricing.engine",
    "ToolCall": "spendgate.pricing.usage",
    "UsageMetrics": "spendgate.pricing.usage",
}
__all__ += list(_LAZY)


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'spendgate' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
