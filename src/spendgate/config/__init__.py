"""Settings: :class:`BudgetConfig` (keyword arguments or ``SPENDGATE_*``
variables), its sections, and the redaction of secrets for logs."""

from __future__ import annotations

from spendgate.config.redact import redact_secrets, redact_url
from spendgate.config.sections import DEFAULT_CAPS, LIMIT_FIELDS
from spendgate.config.settings import BudgetConfig, load_config

__all__ = [
    "DEFAULT_CAPS",
    "LIMIT_FIELDS",
    "BudgetConfig",
    "load_config",
    "redact_secrets",
    "redact_url",
]
