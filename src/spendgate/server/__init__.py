"""The HTTP budget service: ``spendgate serve`` (FastAPI + uvicorn).

A drop-in for coreason-budget's server (``POST /check``, ``POST /spend``,
``GET /health``) plus leases, usage, credits, limits and Prometheus metrics.
Unlike it, this one:

- authenticates every caller but ``/health`` with a bearer API key
  (``SPENDGATE_API_KEYS``, compared in constant time) and takes the user from
  the body the authenticated caller sent, never from an unsigned header;
- fails closed with 503 (not 500) when Redis does not answer, while facts are
  still accepted (spooled) where the budget has a spool;
- reads amounts exactly: JSON numbers are parsed as ``Decimal`` (``0.1`` stays
  ``0.1``), strings are accepted too, and amounts are answered as strings;
- answers every malformed input with a 4xx: 422 for what does not validate,
  413 for a body above the size limit (64 KiB), 408 for a body that has not
  arrived in full within 10 s (``BODY_TIMEOUT_SECONDS`` in
  :mod:`spendgate.server.body`; ``create_app(body_timeout_seconds=...)``);
- logs a client that disconnects mid-body in one line (no traceback, no 500).

Status codes: 200 ok, 401 no valid key, 408 body too slow, 409 idempotency
conflict or illegal lease transition, 413 body too large, 422 invalid input,
429 refused (with ``Retry-After``), 503 store unavailable.

Layout: ``app`` (the factory), ``routes/`` (one module per resource),
``schemas`` (request and response models), ``errors`` (every error answer,
from :data:`spendgate.errors.OUTCOMES`), ``auth`` (API keys), ``body``
(reading a request body), ``responses`` (JSON encoding, documented errors),
``deps`` (what routes depend on), ``metrics`` (Prometheus).

Importing it needs the ``server`` extra (``pip install 'spendgate[server]'``);
``import spendgate`` never imports it.
"""

from __future__ import annotations

try:
    import fastapi  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "spendgate's server needs the 'server' extra: pip install 'spendgate[server]'"
    ) from exc

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
