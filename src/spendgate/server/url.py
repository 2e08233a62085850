"""The request's URL: its percent-escapes must spell UTF-8, and its query
names only parameters the route takes, each once.

ASGI servers decode the path (uvicorn: ``urllib.parse.unquote``) and
Starlette the query string with ``errors="replace"``: an escape that is not
UTF-8 (``%E9``, Latin-1's "é") becomes U+FFFD. Two different ids sent that
way (``caf%E9``, ``caf%FC``) would then both name the entity ``"caf\\ufffd"``:
its usage, balance and caps, which neither caller meant. Such a URL is
answered 422 here, before any route reads an id from it. The raw path is
optional in ASGI; without it the path is taken as the server decoded it.

A query parameter the route does not take is refused (422) as an unknown
body field is: ``POST /v1/credits/sweep?dryrun=true`` would otherwise run
the real sweep, and ``GET /v1/usage/ada?project=p`` answer without the
project. A parameter given twice is refused too: which one counts is not
for the server to guess.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from spendgate.server.errors import RequestProblem, problem, summary

__all__ = ["Utf8UrlMiddleware", "known_query", "url_problem"]


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


async def known_query(request: Request) -> None:
    """The dependency of every authenticated route: the query names only
    the route's own parameters, each at most once.

    :raise RequestProblem: 422 naming each unknown or repeated parameter
    """
    if not request.scope.get("query_string"):
        return  # (most requests: nothing to compare)
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known = _query_names(route.dependant)
    errors = []
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name not in known:
            errors.append(
                {
                    "loc": ["query", name],
                    "msg": "Extra inputs are not permitted",
                    "type": "extra_forbidden",
                }
            )
        elif name in seen:
            errors.append(
                {
                    "loc": ["query", name],
                    "msg": "given more than once",
                    "type": "repeated",
                }
            )
        seen.add(name)
    if errors:
        raise RequestProblem(422, summary(errors), errors)


def _query_names(dependant: Dependant) -> set[str]:
    """The query parameters a route takes, its dependencies' included."""
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names
