"""Who may call: bearer API keys, compared in constant time.

Every route but ``/health`` depends on :func:`authenticate`. The keys come
from ``create_app(api_keys=...)`` or the config's ``api_keys``
(``SPENDGATE_API_KEYS``); starting without any is refused unless the insecure
switch (``spendgate serve --insecure-no-auth``, :data:`INSECURE_ENV` for its
workers) says every caller is trusted.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from loguru import logger

from spendgate.errors import ConfigurationError
from spendgate.server.errors import RequestProblem

__all__ = ["INSECURE_ENV", "ApiKeys", "authenticate"]

#: set to ``1`` by ``spendgate serve --insecure-no-auth`` for its workers
INSECURE_ENV = "SPENDGATE_SERVE_INSECURE_NO_AUTH"

# Annotations of endpoints and dependencies live at module level: with
# postponed annotations FastAPI resolves them in the module's globals.
_BEARER = HTTPBearer(auto_error=False, description="an API key from SPENDGATE_API_KEYS")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]


class ApiKeys:
    """The accepted keys, kept as SHA-256 digests.

    Digests have one length, so ``compare_digest`` compares in constant time
    whatever the lengths of the keys and of what the caller sent.

    :param keys: the accepted keys (empty ones are ignored)
    :param insecure_no_auth: allow no key at all: every caller is then trusted
        (logged as a warning)
    :raise ConfigurationError: no key and ``insecure_no_auth`` is not set
    """

    def __init__(self, keys: Sequence[str], *, insecure_no_auth: bool = False) -> None:
        keys = [k for k in keys if k]
        if not keys and not insecure_no_auth:
            raise ConfigurationError(
                "no API keys configured: set SPENDGATE_API_KEYS (comma-separated), "
                "or start with --insecure-no-auth to accept every caller"
            )
        if not keys:
            logger.warning(
                "spendgate server: authentication is DISABLED (--insecure-no-auth): "
                "any caller can spend, credit and change limits for any user"
            )
        self._digests = [hashlib.sha256(k.encode()).digest() for k in keys]

    def accepts(self, credentials: HTTPAuthorizationCredentials | None) -> bool:
        """Whether ``credentials`` carry one of the keys (always, with none)."""
        if not self._digests:
            return True
        if credentials is None:
            return False
        given = hashlib.sha256(credentials.credentials.encode()).digest()
        # Every key is compared, so the time taken says nothing about which matched.
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(given, digest)
        return matched


async def authenticate(request: Request, credentials: Credentials) -> None:
    """The dependency of every route but ``/health``.

    :raise RequestProblem: 401 without a valid key
    """
    keys: ApiKeys = request.app.state.api_keys  # set by create_app
    if not keys.accepts(credentials):
        raise RequestProblem(
            401, "a valid API key is required: Authorization: Bearer <key>"
        )
