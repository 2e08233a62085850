"""The webhook sink: each event POSTed as JSON, signed with HMAC-SHA256.

Every request carries::

    Content-Type: application/json
    X-Spendgate-Event-Id: <the event's stable id>
    X-Spendgate-Event-Type: credits.cap_reached
    X-Spendgate-Timestamp: <unix seconds when it was sent>
    X-Spendgate-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">

The signature covers the timestamp and the exact body bytes with the
configured secret, so a receiver can check that spendgate sent it
(:func:`verify_signature`), and refuse a replayed request whose timestamp
is too old. A 2xx answer takes the event; anything else, a timeout or a
refused connection is a failed attempt (retried, then dead-lettered). A
redirect is not followed: it is a failure too.

The HTTP client is httpx (``pip install 'spendgate[webhooks]'``), imported
when the first request is sent; signing and verifying need only the
standard library.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import TYPE_CHECKING, Any

from spendgate.config.redact import redact_webhook_url
from spendgate.errors import ConfigurationError, WebhookError
from spendgate.events.model import Event
from spendgate.events.targets import ALL, check_type

if TYPE_CHECKING:
    from spendgate.config import BudgetConfig

#: the headers of a webhook request
SIGNATURE_HEADER = "X-Spendgate-Signature"
TIMESTAMP_HEADER = "X-Spendgate-Timestamp"
EVENT_ID_HEADER = "X-Spendgate-Event-Id"
EVENT_TYPE_HEADER = "X-Spendgate-Event-Type"
#: how old a request :func:`verify_signature` accepts by default, seconds
DEFAULT_TOLERANCE_SECONDS = 300


def sign(secret: str | bytes, timestamp: str, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of
    ``<timestamp>.<body>`` with ``secret``."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def verify_signature(
    secret: str | bytes,
    body: bytes,
    timestamp: str,
    signature: str,
    *,
    tolerance_seconds: float = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """Whether a webhook request is spendgate's, signed with ``secret``, and
    recent: the receiver's side of :func:`sign`.

    :param body: the request's body, the exact bytes received
    :param timestamp: the ``X-Spendgate-Timestamp`` header
    :param signature: the ``X-Spendgate-Signature`` header
    :param tolerance_seconds: the oldest (or furthest in the future) a
        timestamp may be, against replays
    :param now: the receiver's clock, unix seconds (default: now)
    """
    # Headers are the caller's: anything but unix seconds in ASCII digits,
    # or a signature that is not ASCII (compare_digest raises on one), is
    # no request of ours. The length bound keeps a huge number from
    # overflowing the float arithmetic below.
    if not (timestamp.isascii() and timestamp.isdigit()) or len(timestamp) > 15:
        return False
    if not signature.isascii():
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookSink:
    """A target that POSTs each event to one URL.

    :param url: where to POST (http or https)
    :param secret: the signing secret
    :param timeout_seconds: one request's timeout (connect, send, answer)
    :param types: the event types it gets (``"*"``: all)
    :param client: an ``httpx.AsyncClient`` to use (not closed by
        :meth:`aclose`); one of its own otherwise
    """

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        timeout_seconds: float = 10.0,
        types: tuple[str, ...] | list[str] = (ALL,),
        client: Any = None,
    ) -> None:
        if not url.lower().startswith(("http://", "https://")):
            raise ConfigurationError("a webhook URL must be http:// or https://")
        if not secret:
            raise ConfigurationError("a webhook needs a signing secret")
        self.url = url
        self._secret = secret.encode()
        self.timeout_seconds = timeout_seconds
        self._types = frozenset(check_type(t) for t in types)
        #: scheme and host: what logs may show of the URL (never its token)
        self.origin = redact_webhook_url(url)
        #: how logs and dead letters name it
        self.name = f"webhook {self.origin}"
        self._client = client
        self._owns_client = client is None

    @classmethod
    def from_config(cls, config: BudgetConfig) -> list[WebhookSink]:
        """One sink per configured URL (``events_webhook_url``).

        :raise ConfigurationError: a URL without ``events_webhook_secret``
        """
        urls = config.webhook_url_list()
        if urls and config.events_webhook_secret is None:
            raise ConfigurationError(
                "events_webhook_url is set without events_webhook_secret: "
                "webhooks are always signed (set SPENDGATE_EVENTS_WEBHOOK_SECRET)"
            )
        if not urls:
            return []
        assert config.events_webhook_secret is not None
        secret = config.events_webhook_secret.get_secret_value()
        types = config.webhook_type_list()
        return [
            cls(
                url,
                secret,
                timeout_seconds=config.events_webhook_timeout_seconds,
                types=types,
            )
            for url in urls
        ]

    def wants(self, event_type: str) -> bool:
        return ALL in self._types or event_type in self._types

    def types(self) -> frozenset[str]:
        return self._types

    def request(
        self, event: Event, now: float | None = None
    ) -> tuple[bytes, dict[str, str]]:
        """The body and headers of ``event``'s request, signed now."""
        from spendgate import __version__

        body = event.to_json()
        timestamp = str(int(time.time() if now is None else now))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"spendgate/{__version__}",
            EVENT_ID_HEADER: event.id,
            EVENT_TYPE_HEADER: event.type,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._secret, timestamp, body),
        }
        return body, headers

    async def deliver(self, event: Event) -> None:
        """POST ``event``; return on a 2xx answer.

        :raise WebhookError: any other answer, a timeout, no connection
        """
        httpx = require_httpx()
        body, headers = self.request(event)
        client = self._http(httpx)
        try:
            response = await client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            # (a transport's message may quote the URL: its token is hidden)
            reason = f"{type(exc).__name__}: {exc}".replace(self.url, "<url>")
            raise WebhookError(self.origin, reason or "failed") from None
        if not 200 <= response.status_code < 300:
            raise WebhookError(
                self.origin,
                f"answered {response.status_code}",
                response.status_code,
            )

    def _http(self, httpx: Any) -> Any:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.timeout_seconds, follow_redirects=False
            )
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP client if it is this sink's."""
        client, self._client = self._client, None
        if client is not None and self._owns_client:
            await client.aclose()


def require_httpx() -> Any:
    try:
        import httpx
    except ImportError:
        raise ConfigurationError(
            "webhooks need httpx: pip install 'spendgate[webhooks]'"
        ) from None
    return httpx
