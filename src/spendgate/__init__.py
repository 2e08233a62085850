"""spendgate: a Redis-backed, low-latency budget guard for LLM applications.

Admits or refuses a call in one Redis round trip, records what was spent
exactly once, and ships the ledger to Postgres for analytics.
"""

from __future__ import annotations

from spendgate.config import BudgetConfig
from spendgate.errors import (
    BudgetExceededError,
    BudgetUnavailableError,
    ConfigurationError,
    IdempotencyConflictError,
    InvalidAmountError,
    InvalidArgumentError,
    InvalidIdError,
    InvalidIdTypeError,
    LeaseStateError,
    SpendgateError,
    SpoolFullError,
    StorageError,
)
from spendgate.manager import UNSET, BudgetManager, LeaseContext
from spendgate.models import Lease, Limits, ScopeUsage, SpendRecord, WindowUsage
from spendgate.money import MAX_AMOUNT

__version__ = "0.1.0"

__all__ = [
    "MAX_AMOUNT",
    "UNSET",
    "BudgetConfig",
    "BudgetExceededError",
    "BudgetManager",
    "BudgetUnavailableError",
    "ConfigurationError",
    "IdempotencyConflictError",
    "InvalidAmountError",
    "InvalidArgumentError",
    "InvalidIdError",
    "InvalidIdTypeError",
    "Lease",
    "LeaseContext",
    "LeaseStateError",
    "Limits",
    "ScopeUsage",
    "SpendRecord",
    "SpendgateError",
    "SpoolFullError",
    "StorageError",
    "WindowUsage",
    "__version__",
]
