"""The HTTP budget service (``spendgate serve``): FastAPI + uvicorn.

Importing it needs the ``server`` extra (``pip install 'spendgate[server]'``);
``import spendgate`` never imports it.
"""

from __future__ import annotations

from spendgate.server.app import (
    BALANCE_RETRY_AFTER_SECONDS,
    INSECURE_ENV,
    create_app,
    create_app_from_env,
)

__all__ = [
    "BALANCE_RETRY_AFTER_SECONDS",
    "INSECURE_ENV",
    "create_app",
    "create_app_from_env",
]
