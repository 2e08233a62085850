"""The request's URL: its percent-escapes must spell UTF-8.

ASGI servers decode the path (uvicorn: ``urllib.parse.unquote``) and
Starlette the query string with ``errors="replace"``: an escape that is not
UTF-8 (``%E9``, Latin-1's "é") becomes U+FFFD. Two different ids sent that
way (``caf%E9``, ``caf%FC``) would then both name the entity ``"caf\\ufffd"``:
its usage, balance and caps, which neither caller meant. Such a URL is
answered 422 here, before any route reads an id from it. The raw path is
optional in ASGI; without it the path is taken as the server decoded it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from spendgate.server.errors import problem

__all__ = ["Utf8UrlMiddleware", "url_problem"]


def url_problem(raw_path: bytes, query_string: bytes) -> str | None:
    """Which part of the URL (``"path"`` or ``"query"``) does not decode as
    UTF-8, if any."""
    for where, raw in (("path", raw_path), ("query", query_string)):
        # (most URLs have no escape and are ASCII: nothing to decode)
        if b"%" not in raw and raw.isascii():
            continue
        try:
            unquote_to_bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            return where
    return None


class Utf8UrlMiddleware:
    """Answers 422 to a request whose path or query is not UTF-8 once
    percent-decoded (see the module's docstring)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            where = url_problem(
                scope.get("raw_path") or b"", scope.get("query_string", b"")
            )
            if where is not None:
                message = f"the {where} is not UTF-8 once percent-decoded"
                error = {"loc": [where], "msg": message, "type": "url_encoding"}
                response = problem(422, f"invalid request: {message}", [error])
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
